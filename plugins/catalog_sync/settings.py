"""Deployment settings of the DAGs, from environment variables (docs/operations.md, "Settings").

Read when a DAG file is parsed and when a task runs, so every Airflow component of one
deployment must see the same values. A bad value is a ConfigurationError naming the
variable: a typo must never silently fall back to a default.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from typing import Any

from catalog_sync.errors import ConfigurationError

ENV_TARGET = "CATALOG_SYNC_TARGET"
ENV_DELTA_SCHEDULE = "CATALOG_SYNC_DELTA_SCHEDULE"
ENV_FULL_CRON = "CATALOG_SYNC_FULL_CRON"
ENV_TIMEZONE = "CATALOG_SYNC_TIMEZONE"
ENV_SHRINK_GUARD = "CATALOG_SYNC_SHRINK_GUARD"
ENV_MAX_ATTEMPTS = "CATALOG_SYNC_DEAD_LETTER_MAX_ATTEMPTS"
ENV_RETRIES = "CATALOG_SYNC_RETRIES"
ENV_RETRY_DELAY = "CATALOG_SYNC_RETRY_DELAY_SECONDS"
ENV_MAX_RETRY_DELAY = "CATALOG_SYNC_MAX_RETRY_DELAY_SECONDS"
ENV_TASK_TIMEOUT = "CATALOG_SYNC_TASK_TIMEOUT_SECONDS"
ENV_LOCK_TIMEOUT = "CATALOG_SYNC_LOCK_TIMEOUT_SECONDS"
ENV_LOCK_LEASE = "CATALOG_SYNC_LOCK_LEASE_SECONDS"
ENV_SNAPSHOT_PARTS = "CATALOG_SYNC_SNAPSHOT_PARTS"
ENV_SNAPSHOT_PART_ROWS = "CATALOG_SYNC_SNAPSHOT_PART_ROWS"
ENV_SNAPSHOT_SQL = "CATALOG_SYNC_SNAPSHOT_SQL"

DEFAULT_TARGET = "voicebot_default"
DEFAULT_DELTA_SCHEDULE = "*/15 * * * *"
DEFAULT_FULL_CRON = "0 3 * * *"

#: A fixed interval instead of a cron: "30s", "5m", "2h" (cron's minimum is one minute).
_DURATION = re.compile(r"(\d+)\s*([smh])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours"}


@dataclass(frozen=True)
class Settings:
    """Everything a deployment tunes without editing code."""

    target: str = DEFAULT_TARGET
    delta_schedule: str = DEFAULT_DELTA_SCHEDULE
    full_cron: str = DEFAULT_FULL_CRON
    timezone: str = "UTC"
    shrink_guard: float = 0.5
    dead_letter_max_attempts: int = 5
    retries: int = 3
    retry_delay_s: float = 30.0
    max_retry_delay_s: float = 600.0
    task_timeout_s: float = 3600.0
    lock_timeout_s: float = 600.0
    lock_lease_s: float = 3600.0
    snapshot_parts: int = 4
    snapshot_part_rows: int = 50_000
    snapshot_sql: bool = True


def _text(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _number(name: str, default: float, *, minimum: float, integer: bool = False) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigurationError(f"{name}={raw!r} is not {kind}; unset it or fix it") from None
    if value < minimum:
        raise ConfigurationError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def _switch(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name}={raw!r} is neither on (1, true) nor off (0, false)")


def _cron(name: str, default: str) -> str:
    value = _text(name, default)
    if len(value.split()) != 5:
        raise ConfigurationError(
            f"{name}={value!r} is not a 5-field cron expression (e.g. {default!r})"
        )
    return value


def parse_duration(text: str) -> dt.timedelta | None:
    """A duration such as "30s", "5m" or "2h" as a timedelta; None for anything else."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    return dt.timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})


def _schedule(name: str, default: str) -> str:
    """A 5-field cron or a duration of at least one second."""
    value = _text(name, default)
    every = parse_duration(value)
    if every is not None:
        if every < dt.timedelta(seconds=1):
            raise ConfigurationError(f"{name}={value!r}: a duration must be at least 1s")
        return value
    if len(value.split()) != 5:
        raise ConfigurationError(
            f"{name}={value!r} is neither a 5-field cron expression (e.g. {default!r}) nor a "
            "duration such as '30s', '5m' or '2h'"
        )
    return value


def timetable(schedule: str, timezone: str) -> Any:
    """The timetable of a schedule setting (a duration: every that long; a cron: in `timezone`)."""
    from airflow.sdk import CronTriggerTimetable, DeltaTriggerTimetable

    every = parse_duration(schedule)
    if every is not None:
        return DeltaTriggerTimetable(every)
    return CronTriggerTimetable(schedule, timezone=timezone)


def load_settings() -> Settings:
    """The settings of this process's environment, validated."""
    import pendulum

    timezone = _text(ENV_TIMEZONE, "UTC")
    try:
        pendulum.timezone(timezone)
    except Exception:
        raise ConfigurationError(
            f"{ENV_TIMEZONE}={timezone!r} is not an IANA time zone (e.g. Europe/Kyiv)"
        ) from None
    shrink = _number(ENV_SHRINK_GUARD, 0.5, minimum=0.0)
    if shrink > 1:
        raise ConfigurationError(
            f"{ENV_SHRINK_GUARD}={shrink:g} must be a share between 0 and 1 (0.5 = refuse a "
            "snapshot that lost more than half of a kind)"
        )
    return Settings(
        target=_text(ENV_TARGET, DEFAULT_TARGET),
        delta_schedule=_schedule(ENV_DELTA_SCHEDULE, DEFAULT_DELTA_SCHEDULE),
        full_cron=_cron(ENV_FULL_CRON, DEFAULT_FULL_CRON),
        timezone=timezone,
        shrink_guard=shrink,
        dead_letter_max_attempts=int(_number(ENV_MAX_ATTEMPTS, 5, minimum=1, integer=True)),
        retries=int(_number(ENV_RETRIES, 3, minimum=0, integer=True)),
        retry_delay_s=_number(ENV_RETRY_DELAY, 30.0, minimum=0.0),
        max_retry_delay_s=_number(ENV_MAX_RETRY_DELAY, 600.0, minimum=0.0),
        task_timeout_s=_number(ENV_TASK_TIMEOUT, 3600.0, minimum=1.0),
        lock_timeout_s=_number(ENV_LOCK_TIMEOUT, 600.0, minimum=0.0),
        lock_lease_s=_number(ENV_LOCK_LEASE, 3600.0, minimum=1.0),
        snapshot_parts=int(_number(ENV_SNAPSHOT_PARTS, 4, minimum=1, integer=True)),
        snapshot_part_rows=int(_number(ENV_SNAPSHOT_PART_ROWS, 50_000, minimum=1, integer=True)),
        snapshot_sql=_switch(ENV_SNAPSHOT_SQL, True),
    )
