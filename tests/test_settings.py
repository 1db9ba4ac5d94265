"""CATALOG_SYNC_DELTA_SCHEDULE: a cron expression or a duration (docs/operations.md, Settings)."""

from __future__ import annotations

import datetime as dt

import pytest
from airflow.sdk import CronTriggerTimetable, DeltaTriggerTimetable

from catalog_sync import dag_factory
from catalog_sync.errors import ConfigurationError
from catalog_sync.settings import load_settings


@pytest.mark.parametrize(
    ("value", "every"),
    [
        ("30s", dt.timedelta(seconds=30)),
        ("5m", dt.timedelta(minutes=5)),
        ("2h", dt.timedelta(hours=2)),
    ],
)
def test_a_duration_runs_the_delta_every_that_long(
    monkeypatch: pytest.MonkeyPatch, value: str, every: dt.timedelta
) -> None:
    monkeypatch.setenv("CATALOG_SYNC_DELTA_SCHEDULE", value)
    timetable = dag_factory.build_delta_dag().timetable
    assert isinstance(timetable, DeltaTriggerTimetable)
    assert timetable.delta == every


def test_a_cron_still_runs_the_delta_at_its_times(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_SYNC_DELTA_SCHEDULE", "*/5 * * * *")
    timetable = dag_factory.build_delta_dag().timetable
    assert isinstance(timetable, CronTriggerTimetable)
    assert timetable.expression == "*/5 * * * *"


@pytest.mark.parametrize("value", ["30x", "every 5 minutes", "* * * *", "1.5m"])
def test_a_schedule_that_is_neither_is_refused_with_both_forms_named(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CATALOG_SYNC_DELTA_SCHEDULE", value)
    with pytest.raises(ConfigurationError, match="CATALOG_SYNC_DELTA_SCHEDULE") as refused:
        load_settings()
    assert "5-field cron" in str(refused.value)
    assert "'30s'" in str(refused.value)


def test_a_zero_duration_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_SYNC_DELTA_SCHEDULE", "0s")
    with pytest.raises(ConfigurationError, match="at least 1s"):
        load_settings()
