"""Deployment settings (docs/operations.md, Settings): the delta schedule, a cron or a
duration; the snapshot split."""

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


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("CATALOG_SYNC_SNAPSHOT_PARTS", "0", "must be at least 1"),
        ("CATALOG_SYNC_SNAPSHOT_PARTS", "two", "is not an integer"),
        ("CATALOG_SYNC_SNAPSHOT_PART_ROWS", "1.5", "is not an integer"),
    ],
)
def test_a_bad_snapshot_split_setting_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=f"{name}={value!r} {problem}"):
        load_settings()


def test_the_snapshot_split_settings_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_SYNC_SNAPSHOT_PARTS", "8")
    monkeypatch.setenv("CATALOG_SYNC_SNAPSHOT_PART_ROWS", "1000")
    settings = load_settings()
    assert (settings.snapshot_parts, settings.snapshot_part_rows) == (8, 1000)


@pytest.mark.parametrize(
    ("value", "expected"), [("", True), ("0", False), ("off", False), ("1", True)]
)
def test_snapshot_lines_built_in_sql_is_a_switch(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("CATALOG_SYNC_SNAPSHOT_SQL", value)
    assert load_settings().snapshot_sql is expected


def test_a_switch_that_is_neither_on_nor_off_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CATALOG_SYNC_SNAPSHOT_SQL", "maybe")
    with pytest.raises(ConfigurationError, match="CATALOG_SYNC_SNAPSHOT_SQL='maybe' is neither"):
        load_settings()
