"""A delta and a full for the same target, run at once by two real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalog_sync import protocol
from catalog_sync.settings import load_settings
from dag_support import SyncEnv, make_sync_env

BIN = Path(sys.executable).parent


@pytest.fixture
def env(
    receiver, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_env
) -> SyncEnv:
    return make_sync_env(receiver, sqlite_url, tmp_path, monkeypatch)


def _own_airflow_home(home: Path, base: dict[str, str]) -> dict[str, str]:
    """Each process gets its own Airflow metadata DB; they share only the sync state."""
    env = {**base, "AIRFLOW_HOME": str(home)}
    migrated = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    return env


@pytest.mark.slow
def test_a_delta_and_a_full_at_once_never_interleave_their_sends(
    env: SyncEnv, airflow_env: dict[str, str], tmp_path: Path
) -> None:
    base = {**airflow_env, **env.vars}
    delta_env = _own_airflow_home(tmp_path / "home-delta", base)
    full_env = _own_airflow_home(tmp_path / "home-full", base)
    full_env["CATALOG_SYNC_LOCK_TIMEOUT_SECONDS"] = "120"
    # The delta's first batch hangs at the receiver for longer than the full needs to reach
    # `init`, so without the lock the full would announce its snapshot mid-send. (The
    # request log stamps a request when it completes.)
    env.receiver.add_fault(method="POST", path=protocol.EVENTS_PATH, action="hang", seconds=15)
    command = [str(BIN / "catalog-sync"), "sync", "--kinds", "product"]
    delta = subprocess.Popen(
        command, env=delta_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    state = env.state()
    state.ensure_schema()  # idempotent; the delta process may not have created it yet
    target = load_settings().target
    deadline = time.monotonic() + 60
    while state.lock_holder(target) is None:
        assert delta.poll() is None, delta.communicate()
        assert time.monotonic() < deadline, "the delta never took the target's lock"
        time.sleep(0.1)
    state.dispose()
    full = subprocess.run(
        [*command, "--full"], env=full_env, capture_output=True, text=True, timeout=180
    )
    _, delta_err = delta.communicate(timeout=180)
    assert delta.returncode == 0, delta_err[-3000:]
    assert full.returncode == 0, full.stderr[-3000:]

    sent = env.receiver.requests()
    events = [r["time"] for r in sent if r["path"].endswith(protocol.EVENTS_PATH)]
    init = [r["time"] for r in sent if r["path"].endswith(protocol.INIT_PATH)]
    assert events and len(init) == 1
    assert max(events) < init[0], "the full announced its snapshot while the delta was sending"
