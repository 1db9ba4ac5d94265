"""Airflow Connections, looked up the way Airflow itself does in the calling context.

Inside a task the Task SDK asks the API server (`airflow.sdk.Connection.get`). Outside
one (the command line, the demo, a benchmark) the Task SDK has no metadata database, so
this uses the lookup of Airflow's own `airflow connections get`: secrets backends,
`AIRFLOW_CONN_*` variables, then the metadata database. Airflow deprecates that call only
inside a task, where this module never makes it.
"""

from __future__ import annotations

import sys
from typing import Any

from catalog_sync.errors import ConfigurationError


def in_task() -> bool:
    """True inside a running task, where the Task SDK talks to the supervisor."""
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return getattr(runner, "SUPERVISOR_COMMS", None) is not None


def env_var_name(conn_id: str) -> str:
    """The `AIRFLOW_CONN_*` variable that would define `conn_id`."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def get_connection(conn_id: str, *, missing_hint: str) -> Any:
    """The Airflow Connection `conn_id`; `missing_hint` tells the user how to define it."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        if in_task():
            from airflow.sdk import Connection

            return Connection.get(conn_id)
        from airflow.models.connection import Connection as MetadataConnection

        return MetadataConnection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        raise ConfigurationError(
            f"there is no Airflow connection {conn_id!r}; {missing_hint}"
        ) from None


def find_connection(conn_id: str) -> Any | None:
    """The connection `conn_id` from any Airflow source, or None when it is not defined."""
    try:
        return get_connection(conn_id, missing_hint="")
    except ConfigurationError:
        return None
