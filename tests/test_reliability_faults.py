"""Faults at the receiver: each ends in a retry that succeeds, or a clear failure that
keeps everything (watermark, staged files) for the next run and dead-letters nothing.

The faults are the real receiver's `--test-control` ones (see `receiver_harness`); the
runs are the real DAGs under `dag.test()` with a SQLite source, one kind per run.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests

from catalog_sync import protocol
from catalog_sync.hooks import UploadUrlGone, VoiceBotHook
from dag_support import SyncEnv, make_sync_env
from receiver_harness import Receiver, Tenant
from test_dag_behaviour import PRODUCT, calls, expected_products, held_products, watermark

GZIP = {"Content-Type": "application/gzip"}
SNAPSHOT = protocol.dumps({"sync_type": "full", "expected_counts": {"product": 1}})


@pytest.fixture
def env(
    receiver: Receiver,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    airflow_env: dict[str, str],
) -> SyncEnv:
    monkeypatch.setenv("CATALOG_SYNC_RETRIES", "1")
    return make_sync_env(receiver, sqlite_url, tmp_path, monkeypatch)


@pytest.fixture
def tenant(shared_receiver: Receiver) -> Tenant:
    paired = shared_receiver.pair()
    shared_receiver.clear()
    return paired


def uploads(receiver: Receiver) -> list[dict]:
    """The upload PUTs in the receiver's request log."""
    return [r for r in receiver.requests() if r["method"] == "PUT"]


def _upload_url(tenant: Tenant) -> str:
    answer = tenant.call("POST", protocol.INIT_PATH, SNAPSHOT)
    assert answer.status_code == 200, answer.text
    return answer.json()["upload_url"]


# --- the test-control faults themselves ---------------------------------------------------


def test_a_truncate_fault_cuts_the_upload_short_and_frees_the_url(tenant: Tenant) -> None:
    upload_url = _upload_url(tenant)
    tenant.receiver.add_fault(method="PUT", path="/upload", action="truncate", after_bytes=1000)
    body = b"\x1f\x8b" + bytes(200_000)
    with pytest.raises(requests.ConnectionError):
        requests.put(upload_url, data=body, headers=GZIP, timeout=10)
    [cut] = uploads(tenant.receiver)
    assert (cut["fault"], cut["content_length"], cut["body_bytes"]) == ("truncate", len(body), 1000)
    # Nothing was kept of the cut upload: the same URL takes the whole resend.
    again = requests.put(upload_url, data=body, headers=GZIP, timeout=10)
    assert again.json()["bytes"] == len(body)


def test_a_short_upload_ttl_expires_the_next_url_only(tenant: Tenant) -> None:
    tenant.receiver.short_upload_ttl(0)
    expired, fresh = _upload_url(tenant), _upload_url(tenant)
    gone = requests.put(expired, data=b"\x1f\x8b", headers=GZIP, timeout=10)
    assert (gone.status_code, gone.json()["error"]["code"]) == (410, "upload_expired")
    assert requests.put(fresh, data=b"\x1f\x8b", headers=GZIP, timeout=10).ok


@pytest.mark.parametrize("spent", ["used", "expired"])
def test_the_hook_reports_a_spent_upload_url_as_gone_not_as_misconfigured(
    tenant: Tenant, tmp_path: Path, spent: str
) -> None:
    """409 (used) and 410 (expired) mean "init again", not "a person must fix this"."""
    if spent == "expired":
        tenant.receiver.short_upload_ttl(0)
    upload_url = _upload_url(tenant)
    staged = tmp_path / "snapshot.ndjson.gz"
    staged.write_bytes(b"\x1f\x8b")
    if spent == "used":
        assert requests.put(upload_url, data=b"\x1f\x8b", headers=GZIP, timeout=10).ok
    hook = VoiceBotHook("t", connection=_connection(tenant), max_attempts=2, backoff_base=0)
    code = {"used": "HTTP 409 (upload_used", "expired": "HTTP 410 (upload_expired"}[spent]
    with pytest.raises(UploadUrlGone, match=rf"{re.escape(code)}"):
        hook.upload(upload_url, str(staged))


def test_an_upload_hanging_past_the_timeout_is_resent_and_lands(
    tenant: Tenant, tmp_path: Path
) -> None:
    upload_url = _upload_url(tenant)
    staged = tmp_path / "snapshot.ndjson.gz"
    staged.write_bytes(b"\x1f\x8b" + bytes(1000))
    tenant.receiver.add_fault(method="PUT", path="/upload", action="hang", seconds=1.5)
    hook = VoiceBotHook(
        "t", connection=_connection(tenant), timeout=0.5, max_attempts=3, backoff_base=0
    )
    hook.upload(upload_url, str(staged))
    # The hung PUT enters the log only when the receiver has finished with it.
    deadline = time.monotonic() + 10
    while len(sent := uploads(tenant.receiver)) < 2:
        assert time.monotonic() < deadline, sent
        time.sleep(0.1)
    assert sorted(r["fault"] or "" for r in sent) == ["", "hang"]
    assert 200 in [r["status"] for r in sent]


def _connection(tenant: Tenant) -> object:
    from airflow.sdk import Connection

    return Connection.from_json(tenant.airflow_connection(), conn_id="t")


# --- through the full DAG -------------------------------------------------------------------


def test_transient_answers_at_every_full_step_are_retried_and_applied_once(
    env: SyncEnv,
) -> None:
    """A 500 on init, a 429 on the PUT, a 503 with Retry-After and a dropped connection
    on finalize, in one run: each call is retried, the snapshot lands once."""
    arm = env.receiver.add_fault
    arm(method="POST", path=protocol.INIT_PATH, action="status", status=500, retry_after="0")
    arm(method="PUT", path="/upload", action="status", status=429, retry_after="0")
    arm(method="POST", path=protocol.FINALIZE_PATH, action="status", status=503, retry_after="1")
    arm(method="POST", path=protocol.FINALIZE_PATH, action="drop")
    run = env.run("full", PRODUCT)
    assert run.state == "success", env.states(run)
    assert [r["status"] for r in calls(env, protocol.INIT_PATH)] == [500, 200]
    assert [r["status"] for r in uploads(env.receiver)] == [429, 200]
    finalizes = calls(env, protocol.FINALIZE_PATH)
    assert [f["status"] for f in finalizes] == [503, None, 200]
    assert len({f["idempotency_key"] for f in finalizes}) == 1
    assert held_products(env) == expected_products(env)


def test_a_truncated_upload_is_resent_whole_to_the_same_url(env: SyncEnv) -> None:
    env.receiver.add_fault(method="PUT", path="/upload", action="truncate", after_bytes=100)
    run = env.run("full", PRODUCT)
    assert run.state == "success", env.states(run)
    cut, whole = uploads(env.receiver)
    assert cut["body_bytes"] < cut["content_length"] == whole["body_bytes"]
    assert len(calls(env, protocol.INIT_PATH)) == 1
    assert held_products(env) == expected_products(env)


def test_an_upload_whose_answer_was_lost_is_announced_again_and_lands(env: SyncEnv) -> None:
    """The PUT landed but its answer was a 500: the retry finds the URL used (409); the
    task inits a new sync, uploads to it and finalizes that one."""
    env.receiver.add_fault(method="PUT", path="/upload", action="status_after", status=500)
    run = env.run("full", PRODUCT)
    assert run.state == "success", env.states(run)
    assert [u["status"] for u in uploads(env.receiver)] == [500, 409, 200]
    assert len(calls(env, protocol.INIT_PATH)) == 2
    assert len(calls(env, protocol.FINALIZE_PATH)) == 1
    assert held_products(env) == expected_products(env)


def test_an_expired_upload_url_is_announced_again_and_lands(env: SyncEnv) -> None:
    env.receiver.short_upload_ttl(0)
    run = env.run("full", PRODUCT)
    assert run.state == "success", env.states(run)
    assert [u["status"] for u in uploads(env.receiver)] == [410, 200]
    assert len(calls(env, protocol.INIT_PATH)) == 2
    assert held_products(env) == expected_products(env)


def test_a_receiver_that_keeps_failing_fails_the_run_and_keeps_everything(
    env: SyncEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every finalize answers 500: the run fails, nothing moved, and the next run lands."""
    monkeypatch.setenv("CATALOG_SYNC_RETRIES", "0")
    env.receiver.add_fault(
        method="POST",
        path=protocol.FINALIZE_PATH,
        action="status",
        status=500,
        retry_after="0",
        times=1000,
    )
    failed = env.run("full", PRODUCT)
    assert failed.state == "failed"
    assert env.states(failed)["finalize"] == "failed"
    assert watermark(env) is None
    assert list((env.tmp / "staging").rglob("snapshot.ndjson.gz"))
    state = env.state()
    try:
        assert state.dead_letter_list("voicebot_default") == []
    finally:
        state.dispose()
    assert held_products(env) == []

    env.receiver.clear()
    again = env.run("full", PRODUCT)
    assert again.state == "success", env.states(again)
    assert held_products(env) == expected_products(env)


# --- through the delta DAG ------------------------------------------------------------------


def test_transient_faults_on_push_are_retried_and_the_batch_applied_once(env: SyncEnv) -> None:
    """A 429 with Retry-After, then a dropped connection, on the same batch."""
    arm = env.receiver.add_fault
    arm(method="POST", path=protocol.EVENTS_PATH, action="status", status=429, retry_after="0")
    arm(method="POST", path=protocol.EVENTS_PATH, action="drop")
    run = env.run("delta", PRODUCT)
    assert run.state == "success", env.states(run)
    events = calls(env, protocol.EVENTS_PATH)
    assert [e["fault"] for e in events] == ["status", "drop", None]
    assert len({e["idempotency_key"] for e in events}) == 1
    assert held_products(env) == expected_products(env)
