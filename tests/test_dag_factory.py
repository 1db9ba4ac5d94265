"""What the scheduler will do with the DAGs: schedule, retries, fail-fast, timeouts.

`dag.test()` does run retries in-process (see test_dag_behaviour); these tests pin the
declarations the live scheduler reads, which `dag.test()` cannot show (timetables,
backoff, catchup, concurrency).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from airflow.sdk import CronTriggerTimetable
from airflow.sdk.exceptions import AirflowFailException

from catalog_sync import dag_factory
from catalog_sync.errors import ConfigurationError, TransientError
from catalog_sync.settings import load_settings

DAGS_FOLDER = Path(__file__).resolve().parent.parent / "dags"


@pytest.fixture(params=["delta", "full"])
def dag(request: pytest.FixtureRequest):
    build = dag_factory.build_delta_dag if request.param == "delta" else dag_factory.build_full_dag
    return build()


def test_a_configuration_error_fails_fast_without_retry() -> None:
    def broken() -> None:
        raise ConfigurationError("the map is wrong")

    with pytest.raises(AirflowFailException, match="the map is wrong"):
        dag_factory.fail_fast(broken)()


def test_a_transient_error_propagates_unchanged_for_airflow_to_retry() -> None:
    def flaky() -> None:
        raise TransientError("503")

    with pytest.raises(TransientError):
        dag_factory.fail_fast(flaky)()


def test_every_task_retries_with_exponential_backoff_and_has_a_timeout(dag) -> None:
    settings = load_settings()
    for task in dag.tasks:
        assert task.retries == settings.retries, task.task_id
        assert task.retry_exponential_backoff == 2.0, task.task_id
        assert task.max_retry_delay == dt.timedelta(seconds=settings.max_retry_delay_s)
        assert task.execution_timeout == dt.timedelta(seconds=settings.task_timeout_s)


def test_no_catchup_and_one_run_at_a_time(dag) -> None:
    assert dag.catchup is False
    assert dag.max_active_runs == 1


def test_the_schedules_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_SYNC_DELTA_SCHEDULE", "*/5 * * * *")
    monkeypatch.setenv("CATALOG_SYNC_FULL_CRON", "30 2 * * *")
    monkeypatch.setenv("CATALOG_SYNC_TIMEZONE", "Europe/Kyiv")
    delta, full = dag_factory.build_delta_dag(), dag_factory.build_full_dag()
    assert isinstance(delta.timetable, CronTriggerTimetable)
    assert delta.timetable.expression == "*/5 * * * *"
    assert isinstance(full.timetable, CronTriggerTimetable)
    assert full.timetable.expression == "30 2 * * *"
    assert str(full.timetable.timezone) == "Europe/Kyiv"


def test_a_bad_setting_is_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_SYNC_SHRINK_GUARD", "50%")
    with pytest.raises(ConfigurationError, match="CATALOG_SYNC_SHRINK_GUARD"):
        load_settings()


def test_the_dag_files_build_both_dags() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"catalog_delta", "catalog_full"}
