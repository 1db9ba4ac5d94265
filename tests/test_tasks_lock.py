"""The target lock spans a run's push and commit steps: a full waits for a delta's report.

The task bodies are called directly (no Airflow run) in the order Airflow would run them,
two runs interleaved against one state database and the real receiver.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog_sync import tasks
from catalog_sync.errors import TransientError
from dag_support import SyncEnv, make_sync_env

PRODUCT = {"kinds": ["product"]}


@pytest.fixture
def env(
    receiver, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_env
) -> SyncEnv:
    made = make_sync_env(receiver, sqlite_url, tmp_path, monkeypatch)
    monkeypatch.setenv("CATALOG_SYNC_LOCK_TIMEOUT_SECONDS", "0")
    return made


def _full_until_guards() -> dict:
    plan = tasks.plan_full(PRODUCT, dag_id="catalog_full", run_id="full-1")
    parts = [tasks.extract_full(item) for item in plan]
    return tasks.guards(tasks.assemble(plan, parts))


def test_a_full_cannot_start_sending_while_a_delta_is_between_push_and_commit(
    env: SyncEnv,
) -> None:
    plan = tasks.plan_delta(PRODUCT, dag_id="catalog_delta", run_id="delta-1")
    pushed = [tasks.push_delta(tasks.extract_delta(item)) for item in plan]
    snapshot = _full_until_guards()

    with pytest.raises(TransientError, match="locked by 'catalog_delta__delta-1'"):
        tasks.init_full(snapshot)

    for item in pushed:
        tasks.commit_delta(item)
    tasks.report(plan, dag_id="catalog_delta", run_id="delta-1")
    started = tasks.init_full(snapshot)
    assert started["sync_id"]


def test_a_delta_cannot_push_while_a_full_is_between_init_and_commit(env: SyncEnv) -> None:
    started = tasks.init_full(_full_until_guards())
    plan = tasks.plan_delta(PRODUCT, dag_id="catalog_delta", run_id="delta-1")
    extracted = [tasks.extract_delta(item) for item in plan]

    with pytest.raises(TransientError, match="locked by 'catalog_full__full-1'"):
        tasks.push_delta(extracted[0])

    tasks.commit_full(tasks.finalize_full(tasks.upload_full(started)))
    tasks.report([{"kind": "product"}], dag_id="catalog_full", run_id="full-1")
    assert tasks.push_delta(extracted[0])["tally"]["batches"] >= 1
