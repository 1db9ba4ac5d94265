"""`catalog-sync sync` killed between push and commit, then run again: nothing is lost.

The commit step is held by a real row lock on the state database's `sync_state` row
(PostgreSQL), the process is SIGKILLed while it waits, and a second run starts over
from the unchanged watermark.
"""

from __future__ import annotations

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

    time.sleep(3)  # the killed run's lease expires
    again = run_cli(*ARGS, env=variables)
    assert again.returncode == 0, again.stderr[-3000:]
    assert state.watermark("voicebot_default", "product") > before
    hard = f"laravel:product:{changed['hard_deleted']}"
    held = [line for line in _products(env.held()) if not belongs_to_product(line, hard)]
    assert held == _products(env.expected())
    state.dispose()
