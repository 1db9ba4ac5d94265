"""VoiceBotHook against the real reference receiver (a uvicorn process on loopback).

Faults (error answers, hangs, dropped connections) are injected through the receiver's
test-control endpoints; what was really sent is read back from its request log.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from airflow.sdk import Connection

from catalog_sync import protocol
from catalog_sync.errors import ConfigurationError, TransientError
from catalog_sync.hooks import Pairing, VoiceBotHook
from receiver_harness import Receiver

SITE_URL = "https://shop.example.com"
Factory = Callable[..., VoiceBotHook]


@pytest.fixture
def receiver(shared_receiver: Receiver) -> Receiver:
    """One receiver process per module (starting one costs seconds).

    Each test pairs its own tenant and starts with no faults and an empty request log.
    """
    return shared_receiver


@pytest.fixture
def pairing(receiver: Receiver) -> Pairing:
    return VoiceBotHook.pair(receiver.base_url, receiver.issue_code(), SITE_URL)


@pytest.fixture
def make_hook(pairing: Pairing) -> Factory:
    """A hook on the paired credentials; fast retries unless a test says otherwise."""

    def make(**kwargs: object) -> VoiceBotHook:
        connection = Connection(
            conn_id="vb_it",
            conn_type="voicebot",
            host=pairing.ingest_url,
            login=pairing.tenant_id,
            password=pairing.shared_secret_b64,
            extra=json.dumps({"site_url": SITE_URL}),
        )
        options: dict = {"backoff_base": 0.01, "timeout": 5.0, **kwargs}
        return VoiceBotHook("vb_it", connection=connection, **options)

    return make


def logged(receiver: Receiver, method: str, path: str) -> list[dict]:
    return [r for r in receiver.requests() if r["method"] == method and r["path"] == path]


def products(receiver: Receiver, pairing: Pairing) -> list[dict]:
    return receiver.dump("product", tenant=pairing.tenant_id)


def product(i: int, name: str) -> dict:
    return protocol.upsert_op("product", f"laravel:product:{i}", {"name": name})


# --- the calls ------------------------------------------------------------------------------


def test_pair_hands_out_the_receivers_ingest_url(receiver: Receiver, pairing: Pairing) -> None:
    assert pairing.ingest_url == receiver.base_url
    assert protocol.decode_secret(pairing.shared_secret_b64)


def test_status_reports_connected(make_hook: Factory) -> None:
    assert make_hook().status()["provider_status"] == "connected"


def test_events_are_applied(receiver: Receiver, pairing: Pairing, make_hook: Factory) -> None:
    answer = make_hook().send_events("batch-1", [product(1, "Кава"), product(2, "Чай")])
    assert (answer["processed"], answer["idempotent_replay"], answer["errors"]) == (2, False, [])
    assert [(e["external_id"], e["payload"]["name"]) for e in products(receiver, pairing)] == [
        ("laravel:product:1", "Кава"),
        ("laravel:product:2", "Чай"),
    ]


def test_full_snapshot_init_upload_finalize(
    receiver: Receiver, pairing: Pairing, make_hook: Factory, tmp_path: Path
) -> None:
    hook = make_hook()
    hook.send_events("before", [product(99, "gone after the snapshot")])
    lines = [
        protocol.snapshot_line("product", f"laravel:product:{i}", {"name": f"P{i}"}) for i in (1, 2)
    ]
    snapshot = tmp_path / "full.ndjson.gz"
    snapshot.write_bytes(gzip.compress(b"".join(protocol.dumps(x) + b"\n" for x in lines)))

    started = hook.init({"product": 2})
    hook.upload(started["upload_url"], snapshot.as_uri(), snapshot.stat().st_size)
    hook.finalize(started["sync_id"])

    assert [e["external_id"] for e in products(receiver, pairing)] == [
        "laravel:product:1",
        "laravel:product:2",
    ]


def test_unpaired_credentials_are_refused(make_hook: Factory) -> None:
    hook = make_hook()
    hook.unpair()
    with pytest.raises(ConfigurationError, match="not_paired"):
        hook.status()


# --- retries (spec section 9) ----------------------------------------------------------------


def test_events_answered_500_then_200_are_applied_once(
    receiver: Receiver, pairing: Pairing, make_hook: Factory
) -> None:
    receiver.add_fault(method="POST", path=protocol.EVENTS_PATH, action="status_after", status=500)
    answer = make_hook().send_events("batch-r", [product(5, "once")])
    assert answer["idempotent_replay"] is True
    assert [e["external_id"] for e in products(receiver, pairing)] == ["laravel:product:5"]


def test_each_events_attempt_has_a_fresh_nonce_and_the_same_key(
    receiver: Receiver, make_hook: Factory
) -> None:
    receiver.add_fault(method="POST", path=protocol.EVENTS_PATH, action="status_after", status=500)
    make_hook().send_events("batch-n", [product(6, "x")])
    sent = logged(receiver, "POST", protocol.EVENTS_PATH)
    assert [r["status"] for r in sent] == [500, 200]
    assert len({r["nonce"] for r in sent}) == 2
    assert [r["idempotency_key"] for r in sent] == ["batch-n", "batch-n"]


def test_retry_after_of_a_429_is_honoured(receiver: Receiver, make_hook: Factory) -> None:
    receiver.add_fault(
        method="GET", path=protocol.STATUS_PATH, action="status", status=429, retry_after="1"
    )
    began = time.monotonic()
    assert make_hook(backoff_base=0.01).status()["provider_status"] == "connected"
    assert time.monotonic() - began >= 1.0
    assert [r["status"] for r in logged(receiver, "GET", protocol.STATUS_PATH)] == [429, 200]


def test_a_400_is_sent_once_and_raises_configuration_error(
    receiver: Receiver, make_hook: Factory
) -> None:
    receiver.add_fault(method="GET", path=protocol.STATUS_PATH, action="status", status=400)
    with pytest.raises(ConfigurationError, match=r"HTTP 400.*injected_fault"):
        make_hook().status()
    assert len(logged(receiver, "GET", protocol.STATUS_PATH)) == 1


def test_a_hang_past_the_timeout_is_retried(receiver: Receiver, make_hook: Factory) -> None:
    receiver.add_fault(method="GET", path=protocol.STATUS_PATH, action="hang", seconds=1.5)
    assert make_hook(timeout=0.5).status()["provider_status"] == "connected"
    # The hung request enters the log only when the receiver finishes it.
    deadline = time.monotonic() + 10
    while len(sent := logged(receiver, "GET", protocol.STATUS_PATH)) < 2:
        assert time.monotonic() < deadline, sent
        time.sleep(0.1)
    assert len({r["nonce"] for r in sent}) == 2


def test_a_dropped_connection_is_retried(receiver: Receiver, make_hook: Factory) -> None:
    receiver.add_fault(method="GET", path=protocol.STATUS_PATH, action="drop")
    assert make_hook().status()["provider_status"] == "connected"
    assert [r["status"] for r in logged(receiver, "GET", protocol.STATUS_PATH)] == [None, 200]


def test_a_dropped_upload_is_resent_as_is(
    receiver: Receiver, pairing: Pairing, make_hook: Factory, tmp_path: Path
) -> None:
    hook = make_hook()
    snapshot = tmp_path / "one.ndjson.gz"
    line = protocol.snapshot_line("product", "laravel:product:7", {"name": "P7"})
    snapshot.write_bytes(gzip.compress(protocol.dumps(line) + b"\n"))
    started = hook.init({"product": 1})
    receiver.add_fault(method="PUT", path="/upload", action="drop")
    hook.upload(started["upload_url"], str(snapshot))
    hook.finalize(started["sync_id"])
    assert [e["external_id"] for e in products(receiver, pairing)] == ["laravel:product:7"]


def test_exhausted_retries_raise_transient_error_with_attempts_and_cause(
    receiver: Receiver, make_hook: Factory
) -> None:
    receiver.add_fault(
        method="GET", path=protocol.STATUS_PATH, action="status", status=503, times=2
    )
    with pytest.raises(TransientError, match="after 2 attempts; last cause: HTTP 503"):
        make_hook(max_attempts=2).status()


def test_the_secret_is_in_no_log_line_or_error(
    receiver: Receiver,
    pairing: Pairing,
    make_hook: Factory,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Airflow's structlog writes the hook's lines to the console: check both channels."""
    caplog.set_level(logging.DEBUG)
    hook = make_hook()
    receiver.add_fault(method="POST", path=protocol.EVENTS_PATH, action="status", status=500)
    hook.send_events("batch-s", [product(8, "x")])
    receiver.add_fault(method="GET", path=protocol.STATUS_PATH, action="status", status=401)
    with pytest.raises(ConfigurationError) as refused:
        hook.status()
    secret = pairing.shared_secret_b64
    console = "".join(capfd.readouterr())
    assert "retrying" in console + caplog.text
    assert secret not in console
    assert secret not in caplog.text
    assert secret not in str(refused.value)
    assert secret not in receiver.log_text()
