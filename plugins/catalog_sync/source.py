"""The source database: an engine from the Airflow connection `catalog_source`.

Airflow users write connections as URIs (`AIRFLOW_CONN_CATALOG_SOURCE=postgresql://...`,
`mysql://...`), which name no Python driver. This module maps those schemes to the
drivers the project installs, so the URI works exactly as written.

Every engine pins the session time zone to UTC. The extraction compares watermark
columns with naive UTC datetimes; with the session in UTC that is right for PostgreSQL
`timestamp` and `timestamptz` and for MariaDB `DATETIME` and `TIMESTAMP` alike, as
long as naive columns hold UTC (Laravel's default, `APP_TIMEZONE=UTC`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa

from catalog_sync.connections import env_var_name, get_connection
from catalog_sync.errors import ConfigurationError

#: The Airflow connection id of the shop's database.
SOURCE_CONN_ID = "catalog_source"

#: Scheme (SQLAlchemy backend name or Airflow conn type) -> SQLAlchemy driver name.
_DRIVERS: dict[str, str] = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "sqlite": "sqlite",
}
#: Drivers that are installed; an explicit `+driver` must be one of them.
_INSTALLED = frozenset(
    {"postgresql+psycopg", "mysql+pymysql", "mariadb+pymysql", "sqlite", "sqlite+pysqlite"}
)
_SUPPORTED = "postgresql://, postgres://, mysql://, mariadb:// or sqlite:///path/to/file.db"


def normalize_url(url: str | sa.URL, *, what: str = "the source database URL") -> sa.URL:
    """Map a URL as Airflow users write it onto an installed SQLAlchemy driver.

    `postgresql://` -> psycopg 3, `mysql://`/`mariadb://` -> PyMySQL with utf8mb4.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigurationError(
            f"{what} is not a database URL; write it like postgresql://user@host:5432/shop"
        ) from None
    name = parsed.drivername.lower()
    driver = _DRIVERS.get(name, name)
    if driver not in _INSTALLED:
        raise ConfigurationError(
            f"{what} has the unsupported scheme {parsed.drivername!r}; use {_SUPPORTED}"
        )
    parsed = parsed.set(drivername=driver)
    if driver.startswith(("mysql", "mariadb")) and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    if driver.startswith("sqlite") and not parsed.database:
        raise ConfigurationError(
            f"{what} names no SQLite file; write it like sqlite:////absolute/path/shop.db"
        )
    return parsed


def _airflow_connection(conn_id: str) -> Any:
    return get_connection(
        conn_id,
        missing_hint=(
            f"set it, e.g. {env_var_name(conn_id)}=postgresql://user@host:5432/shop "
            f"(or mysql://..., sqlite:////path/shop.db), "
            f"or `airflow connections add {conn_id} --conn-uri ...`"
        ),
    )


def url_from_connection(conn: Any) -> sa.URL:
    """Build a SQLAlchemy URL from an Airflow Connection's fields.

    SQLite: the file path is the host (the SQLite provider's convention) or, when a URI
    like `sqlite:////abs/shop.db` was parsed, the schema. Extras become query options.
    """
    conn_type = (conn.conn_type or "").lower()
    what = f"the Airflow connection {conn.conn_id!r}"
    if conn_type not in _DRIVERS and conn_type not in _INSTALLED:
        raise ConfigurationError(
            f"{what} has the unsupported type {conn.conn_type!r}; use {_SUPPORTED}"
        )
    extra: Mapping[str, Any] = conn.extra_dejson or {}
    query = {str(k): str(v) for k, v in extra.items() if v is not None}
    if conn_type.startswith("sqlite"):
        host = conn.host or ""
        path = host if host and host != "localhost" else (conn.schema or "")
        url = sa.URL.create(conn_type, database=path or None, query=query)
    else:
        url = sa.URL.create(
            conn_type,
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
            query=query,
        )
    return normalize_url(url, what=what)


def resolve_url(source: str | None = None) -> sa.URL:
    """A URL for `source`: a database URL as given, else an Airflow connection id.

    None means the connection `catalog_source`.
    """
    source = source or SOURCE_CONN_ID
    if "://" in source or source.startswith("sqlite:"):
        return normalize_url(source)
    return url_from_connection(_airflow_connection(source))


def _connect_args(url: sa.URL) -> dict[str, Any]:
    """Session settings that make every dialect speak UTC (see the module docstring)."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        return {"options": "-c TimeZone=UTC"}
    if backend in {"mysql", "mariadb"}:
        return {"init_command": "SET time_zone = '+00:00'"}
    return {}


def create_source_engine(source: str | sa.URL | None = None, **kwargs: Any) -> sa.Engine:
    """The engine of the shop's database (default: the Airflow connection `catalog_source`).

    JSON columns are decoded by `values.json_value` semantics everywhere: psycopg decodes
    PostgreSQL json/jsonb with orjson (as MariaDB and SQLite text is decoded), which is
    also several times faster than the standard library on every row of a snapshot.
    """
    url = normalize_url(source) if isinstance(source, sa.URL) else resolve_url(source)
    connect_args = {**_connect_args(url), **kwargs.pop("connect_args", {})}
    if url.get_backend_name() == "postgresql":
        kwargs.setdefault("json_deserializer", orjson.loads)
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def safe_url(engine_or_url: sa.Engine | sa.URL) -> str:
    """The URL for messages: the password never leaves the process."""
    url = engine_or_url.url if isinstance(engine_or_url, sa.Engine) else engine_or_url
    return url.render_as_string(hide_password=True)


def database_now(conn: sa.Connection) -> dt.datetime:
    """The database's clock as a naive UTC datetime.

    Windows are cut by the database clock, never the worker's: commit stamps come from
    there. On PostgreSQL `now()` is the transaction start, which inside a snapshot is
    at or before the moment the snapshot is taken: the safe side.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        value = conn.exec_driver_sql("SELECT now() AT TIME ZONE 'UTC'").scalar_one()
    elif dialect in {"mysql", "mariadb"}:
        value = conn.exec_driver_sql("SELECT UTC_TIMESTAMP(6)").scalar_one()
    elif dialect == "sqlite":
        text = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar_one()
        value = dt.datetime.fromisoformat(text)
    else:  # pragma: no cover - normalize_url admits only the three above
        raise ConfigurationError(f"no clock query for the {dialect} dialect")
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value
