"""The target lock: a lease row in the state database, across threads and processes."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

from catalog_sync.errors import TransientError
from catalog_sync.state import StateStore

TARGET = "voicebot_default"


class _WaitSignal(logging.Handler):
    """Sets an event when the lock reports that it waits (the second holder really polled)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.waiting = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("waiting for the lock"):
            self.waiting.set()


@pytest.fixture
def wait_signal() -> Iterator[_WaitSignal]:
    logger = logging.getLogger("catalog_sync.state")
    handler = _WaitSignal()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_second_holder_waits_until_the_first_releases(
    store: StateStore, database_url: str, wait_signal: _WaitSignal
) -> None:
    other = StateStore(database_url)  # its own engine and connections, like another worker
    events: list[str] = []
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with other.target_lock(TARGET, "catalog_full/run2", timeout_s=60, poll_s=0.02):
                events.append("full acquired")
        except BaseException as exc:
            errors.append(exc)

    with store.target_lock(TARGET, "catalog_delta/run1"):
        thread = threading.Thread(target=second)
        thread.start()
        assert wait_signal.waiting.wait(30), "the second holder never tried the lock"
        assert events == []
        events.append("delta releasing")
    thread.join(60)
    assert errors == []
    assert events == ["delta releasing", "full acquired"]
    other.dispose()


def test_timeout_raises_transient_error_naming_the_holder(store: StateStore) -> None:
    with (
        store.target_lock(TARGET, "catalog_delta/run1"),
        pytest.raises(TransientError, match=r"locked by 'catalog_delta/run1'"),
        store.target_lock(TARGET, "catalog_full/run2", timeout_s=0.1, poll_s=0.02),
    ):
        pytest.fail("the second holder got the lock while the first held it")


def test_lock_is_released_when_the_body_raises(store: StateStore) -> None:
    with pytest.raises(RuntimeError), store.target_lock(TARGET, "catalog_delta/run1"):
        raise RuntimeError("push failed")
    assert store.lock_holder(TARGET) is None
    with store.target_lock(TARGET, "catalog_full/run2", timeout_s=0):
        assert store.lock_holder(TARGET) == "catalog_full/run2"


def test_locks_of_different_targets_are_independent(store: StateStore) -> None:
    with (
        store.target_lock(TARGET, "run1"),
        store.target_lock("voicebot_other", "run2", timeout_s=0),
    ):
        assert store.lock_holder("voicebot_other") == "run2"


def test_expired_lease_of_a_crashed_process_is_taken_over(
    store: StateStore, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    crash = textwrap.dedent(
        """
        import os, sys
        from catalog_sync.state import StateStore

        store = StateStore(sys.argv[1])
        with store.target_lock("voicebot_default", "crashed/run1", lease_s=0.3):
            os._exit(3)  # dies holding the lock: no release, no cleanup
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", crash, database_url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert store.lock_holder(TARGET) == "crashed/run1"
    with (
        caplog.at_level(logging.WARNING, logger="catalog_sync.state"),
        store.target_lock(TARGET, "catalog_delta/run2", timeout_s=60, poll_s=0.05),
    ):
        assert store.lock_holder(TARGET) == "catalog_delta/run2"
    assert "took over the lock of 'voicebot_default' from 'crashed/run1'" in caplog.text


def test_a_retry_of_the_same_holder_takes_its_lease_back(store: StateStore) -> None:
    """An Airflow retry of the task that died holding the lock need not wait an hour."""
    abandoned = store.target_lock(TARGET, "catalog_delta/run1")
    abandoned.__enter__()  # the first try dies here: never exits
    with store.target_lock(TARGET, "catalog_delta/run1", timeout_s=0):
        assert store.lock_holder(TARGET) == "catalog_delta/run1"
    assert store.lock_holder(TARGET) is None
