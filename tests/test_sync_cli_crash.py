"""`catalog-sync sync` killed between push and commit, then run again: same final state,
nothing lost, nothing applied twice.

The commit step is held by a real row lock on the state database's `sync_state` row
(PostgreSQL), the process is SIGKILLed while it waits, and a second run resumes the
crashed run's pending window: it re-sends the same staged batches (same batch ids, which
the receiver answers as replays and applies nothing), then commits that window.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from catalog_sync import protocol
from catalog_sync.demo_shop import belongs_to_product, change_some_products
from dag_support import SyncEnv, make_sync_env

BIN = Path(sys.executable).parent
ARGS = ("sync", "--kinds", "product")


def _products(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["kind"] == "product"]


def _event_keys(receiver) -> list[str]:
    """The batch ids (idempotency keys) of the events requests the receiver logged."""
    return [
        r["idempotency_key"]
        for r in receiver.requests()
        if r["path"].endswith(protocol.EVENTS_PATH) and r["status"] == 200
    ]


def _wait_for_blocked_commit(dsn: str, process: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            assert process.poll() is None, "sync ended before its commit step"
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query ILIKE 'UPDATE sync_state%'"
            ).fetchone()[0]
            if waiting:
                return
            time.sleep(0.2)
    pytest.fail("the commit step never reached the locked sync_state row")


@pytest.mark.postgres
@pytest.mark.slow
def test_killed_between_push_and_commit_then_rerun_loses_nothing(
    receiver,
    sqlite_url: str,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    airflow_env,
    run_cli,
) -> None:
    env: SyncEnv = make_sync_env(receiver, sqlite_url, tmp_path, monkeypatch, postgres_url)
    variables = {**env.vars, "CATALOG_SYNC_LOCK_LEASE_SECONDS": "3"}
    first = run_cli(*ARGS, env=variables)
    assert first.returncode == 0, first.stderr[-3000:]
    state = env.state()
    before = state.watermark("voicebot_default", "product")
    changed = change_some_products(env.engine)
    env.wait_safety_lag()
    receiver.clear()

    dsn = sa.make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn) as holder:
        holder.execute(
            "SELECT * FROM sync_state WHERE target = 'voicebot_default' AND kind = 'product' "
            "FOR UPDATE"
        )
        process = subprocess.Popen(
            [str(BIN / "catalog-sync"), *ARGS],
            env={**airflow_env, **variables},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_for_blocked_commit(dsn, process)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        holder.rollback()

    pushed = [r for r in receiver.requests() if r["path"] == protocol.EVENTS_PATH]
    assert pushed and all(r["status"] == 200 for r in pushed)  # the push went through
    assert state.watermark("voicebot_default", "product") == before  # the commit did not
    crashed_keys = set(_event_keys(receiver))
    pending = state.pending_window("voicebot_default", "product")
    assert pending is not None and pending["expected_low"] == before.isoformat()
    old_high = dt.datetime.fromisoformat(pending["window"]["high"])

    time.sleep(3)  # the killed run's lease expires
    receiver.clear()
    again = run_cli(*ARGS, env=variables)
    assert again.returncode == 0, again.stderr[-3000:]
    resent = _event_keys(receiver)
    # The same batches again, answered as replays: nothing was applied a second time.
    assert resent and set(resent) <= crashed_keys
    [line] = [e for e in state.ledger(target="voicebot_default") if e.kind == "product"][:1]
    # Every batch was answered with its stored response (`idempotent_replay`).
    assert (line.status, line.replayed) == ("committed", len(resent))
    assert state.watermark("voicebot_default", "product") == old_high
    assert state.pending_window("voicebot_default", "product") is None
    hard = f"laravel:product:{changed['hard_deleted']}"
    held = [line for line in _products(env.held()) if not belongs_to_product(line, hard)]
    assert held == _products(env.expected())

    # The next normal delta plans from the resumed window's high, with new batches.
    later = change_some_products(env.engine)
    env.wait_safety_lag()
    receiver.clear()
    after = run_cli(*ARGS, env=variables)
    assert after.returncode == 0, after.stderr[-3000:]
    assert state.watermark("voicebot_default", "product") > old_high
    fresh = _event_keys(receiver)
    assert fresh and not set(fresh) & crashed_keys
    # A delta cannot see hard deletes (a full reconciles them).
    gone = (hard, f"laravel:product:{later['hard_deleted']}")
    held = [
        line for line in _products(env.held()) if not any(belongs_to_product(line, g) for g in gone)
    ]
    assert held == _products(env.expected())
    state.dispose()
