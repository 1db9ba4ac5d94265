"""Builds the two DAGs (TaskFlow, `airflow.sdk`) over the task bodies in `catalog_sync.tasks`.

Delta: plan -> [extract -> push -> commit] per (target, kind) (a mapped task group, so a
target or kind whose push failed does not block the commit of the others) -> report.
Full: plan -> extract per (target, kind) (mapped, parallel) -> [assemble -> guards -> init
-> upload -> finalize -> commit] per target (with a `targets:` section, a mapped task group
`per_target`: one snapshot per target; assemble gets every part and keeps its target's;
without one, the chain on its own, as it always was) -> report.

Retries: a TransientError propagates and Airflow retries with exponential backoff
(default_args); a ConfigurationError becomes AirflowFailException, which fails the task
at once without using its retries. `report` runs whatever happened (all_done) so the
ledger table is logged and the target lock released.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from catalog_sync import params, tasks
from catalog_sync.errors import ConfigurationError
from catalog_sync.settings import Settings, load_settings, timetable

log = logging.getLogger(__name__)

DELTA_DAG_ID = "catalog_delta"
FULL_DAG_ID = "catalog_full"
TAGS = ["catalog-sync"]

#: Errors of the tasks run in this process, newest last (read by `catalog-sync sync`,
#: which runs the DAG in-process and maps them to exit codes).
FAILURES: list[BaseException] = []

T = TypeVar("T")


def fail_fast(fn: Callable[..., T]) -> Callable[..., T]:
    """ConfigurationError -> AirflowFailException (no retry); everything else unchanged."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return fn(*args, **kwargs)
        except tasks.RunFailed as exc:  # the cause is already recorded by its own task
            raise AirflowFailException(str(exc)) from exc
        except ConfigurationError as exc:
            FAILURES.append(exc)
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            FAILURES.append(exc)
            raise

    return wrapper


def default_args(settings: Settings, retries: int | None = None) -> dict[str, Any]:
    """What the scheduler does with a failing task (see the module docstring)."""
    from catalog_sync import alerts

    return {
        "on_failure_callback": alerts.failure_notifiers() or None,
        "owner": "catalog-sync",
        "retries": settings.retries if retries is None else retries,
        "retry_delay": dt.timedelta(seconds=settings.retry_delay_s),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(seconds=settings.max_retry_delay_s),
        "execution_timeout": dt.timedelta(seconds=settings.task_timeout_s),
    }


def _context() -> tuple[dict[str, Any], str, str]:
    """(raw run conf, dag id, run id) of the running task."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    dag_run = context["dag_run"]
    return dict(dag_run.conf or {}), dag_run.dag_id, dag_run.run_id


def _start_date(settings: Settings) -> dt.datetime:
    import pendulum

    return pendulum.datetime(2024, 1, 1, tz=settings.timezone)


def _params(mode: str, settings: Settings) -> dict[str, Any]:
    """The DAG's params, their choices (kinds, targets) taken from the entity map."""
    from catalog_sync.config import load_config

    catalog = load_config()
    return params.declare(mode, list(catalog.kinds), catalog.target_names(settings.target))


def _has_targets() -> bool:
    """The map has a `targets:` section (the full DAG then snapshots per target)."""
    from catalog_sync.config import load_config

    return load_config().targets is not None


def build_delta_dag(
    settings: Settings | None = None, *, dag_id: str = DELTA_DAG_ID, retries: int | None = None
) -> Any:
    """The delta DAG; `retries` overrides the settings' (the `sync` command uses 0)."""
    from airflow.sdk import dag, task, task_group

    settings = settings or load_settings()

    @dag(
        dag_id=dag_id,
        schedule=timetable(settings.delta_schedule, settings.timezone),
        start_date=_start_date(settings),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(settings, retries),
        params=_params(params.DELTA, settings),
        tags=TAGS,
        doc_md=__doc__,
    )
    def delta() -> None:
        @task
        def plan() -> list[dict[str, Any]]:
            conf, dag_id, run_id = _context()
            return fail_fast(tasks.plan_delta)(conf, dag_id=dag_id, run_id=run_id)

        @task
        def extract(item: dict[str, Any]) -> dict[str, Any]:
            return fail_fast(tasks.extract_delta)(item)

        @task
        def push(item: dict[str, Any]) -> dict[str, Any]:
            return fail_fast(tasks.push_delta)(item)

        @task
        def commit(item: dict[str, Any]) -> dict[str, Any]:
            return fail_fast(tasks.commit_delta)(item)

        @task_group
        def per_kind(item: dict[str, Any]) -> None:
            commit(push(extract(item)))

        @task(trigger_rule="all_done")
        def report(planned: list[dict[str, Any]]) -> dict[str, Any]:
            _, dag_id, run_id = _context()
            return fail_fast(tasks.report)(planned, dag_id=dag_id, run_id=run_id)

        planned = plan()
        per_kind.expand(item=planned) >> report(planned)

    return delta()


def build_full_dag(
    settings: Settings | None = None, *, dag_id: str = FULL_DAG_ID, retries: int | None = None
) -> Any:
    """The full DAG; `retries` overrides the settings' (the `sync` command uses 0)."""
    from airflow.sdk import CronTriggerTimetable, dag, task, task_group

    settings = settings or load_settings()

    @dag(
        dag_id=dag_id,
        schedule=CronTriggerTimetable(settings.full_cron, timezone=settings.timezone),
        start_date=_start_date(settings),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(settings, retries),
        params=_params(params.FULL, settings),
        tags=TAGS,
        doc_md=__doc__,
    )
    def full() -> None:
        @task
        def plan() -> list[dict[str, Any]]:
            conf, dag_id, run_id = _context()
            return fail_fast(tasks.plan_full)(conf, dag_id=dag_id, run_id=run_id)

        @task
        def extract(item: dict[str, Any]) -> dict[str, Any]:
            return fail_fast(tasks.extract_full)(item)

        @task
        def targets(planned: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
            return tasks.by_target(planned)

        @task
        def assemble(planned: list[dict[str, Any]], parts: list[dict[str, Any]]) -> dict:
            return fail_fast(tasks.assemble)(planned, list(parts))

        @task
        def guards(snapshot: dict[str, Any]) -> dict[str, Any]:
            return fail_fast(tasks.guards)(snapshot)

        @task
        def init(snapshot: dict[str, Any]) -> dict[str, Any]:
            return fail_fast(tasks.init_full)(snapshot)

        @task
        def upload(snapshot: dict[str, Any]) -> dict[str, Any]:
            return fail_fast(tasks.upload_full)(snapshot)

        @task
        def finalize(snapshot: dict[str, Any]) -> dict[str, Any]:
            return fail_fast(tasks.finalize_full)(snapshot)

        @task
        def commit(snapshot: dict[str, Any]) -> dict[str, Any]:
            return fail_fast(tasks.commit_full)(snapshot)

        @task(trigger_rule="all_done")
        def report(planned: list[dict[str, Any]]) -> dict[str, Any]:
            _, dag_id, run_id = _context()
            return fail_fast(tasks.report)(planned, dag_id=dag_id, run_id=run_id)

        def snapshot(group: Any, parts: Any) -> Any:
            return commit(finalize(upload(init(guards(assemble(group, parts))))))

        @task_group
        def per_target(group: list[dict[str, Any]], parts: list[dict[str, Any]]) -> Any:
            return snapshot(group, parts)

        planned = plan()
        parts = extract.expand(item=planned)
        if _has_targets():
            done = per_target.partial(parts=parts).expand(group=targets(planned))
        else:  # one target: the task graph it always had
            done = snapshot(planned, parts)
        done >> report(planned)

    return full()


def register(dag: Any) -> None:
    """Write `dag` to the metadata database, as the DAG processor would.

    `dag.test()` creates its run from the serialized DAG; it serializes only what it
    finds in the configured DAG folder, which need not hold these DAGs (the `sync`
    command, tests).
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session
        )
