"""SQLAlchemy pieces shared by the project's own databases (receiver store, sync state)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def byte_text(length: int) -> sa.types.TypeEngine[str]:
    """A string column compared byte-wise everywhere, so keys and sort order agree.

    MySQL's default collation is case-insensitive and PostgreSQL's follows the locale;
    external ids and target names are case-sensitive identities.
    """
    return (
        sa.String(length)
        .with_variant(sa.String(length, collation="C"), "postgresql")
        .with_variant(sa.String(length, collation="utf8mb4_bin"), "mysql", "mariadb")
    )


def configure_sqlite(engine: sa.Engine) -> None:
    """WAL + busy timeout, and writers take the lock at BEGIN (no upgrade deadlocks).

    A connection run with the execution option `catalog_sync_read=True` begins a plain
    (shared) transaction instead.
    """

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get("catalog_sync_read", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
