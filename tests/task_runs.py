"""Whole delta and full runs through the DAG's task bodies, in the order the DAG runs them.

`catalog_sync.tasks` holds every task's code; `dag_factory` only wraps it in `@task`s. Calling
the bodies directly runs the same plan/extract/push/commit/report steps (same state
database, same staging, same receiver) without Airflow's per-run overhead, which is what
lets the reliability tests afford hundreds of runs. One kind's failure fails the run here
at once (the DAG would let the other kinds commit), which is what those tests want.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from catalog_sync import dag_factory, tasks

_RUN_IDS = itertools.count(1)


def _run_id(prefix: str) -> str:
    return f"{prefix}-{next(_RUN_IDS)}"


def delta_run(conf: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One delta run; returns the commit results per kind (status and counts)."""
    run_id = _run_id("delta")
    dag_id = dag_factory.DELTA_DAG_ID
    plan = tasks.plan_delta(dict(conf or {}), dag_id=dag_id, run_id=run_id)
    try:
        return [tasks.commit_delta(tasks.push_delta(tasks.extract_delta(item))) for item in plan]
    finally:
        tasks.report(plan, dag_id=dag_id, run_id=run_id)


def full_run(conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One full run (guards included); returns what `commit_full` returned."""
    run_id = _run_id("full")
    dag_id = dag_factory.FULL_DAG_ID
    plan = tasks.plan_full(dict(conf or {}), dag_id=dag_id, run_id=run_id)
    try:
        snapshot = tasks.guards(tasks.assemble(plan, [tasks.extract_full(i) for i in plan]))
        return tasks.commit_full(tasks.finalize_full(tasks.upload_full(tasks.init_full(snapshot))))
    finally:
        tasks.report(plan, dag_id=dag_id, run_id=run_id)
