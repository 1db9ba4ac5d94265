"""`StateStore.from_airflow`: the connection as users write it, and the SQLite default."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from catalog_sync.errors import ConfigurationError
from catalog_sync.state import StateStore

ENV = "AIRFLOW_CONN_CATALOG_SYNC_STATE"
POINT = dt.datetime(2026, 3, 1, 3, 0, 0, 500, tzinfo=dt.UTC)


def _round_trip(store: StateStore) -> None:
    store.ensure_schema()
    store.set_snapshot("voicebot_default", "product", POINT, 3)
    assert store.watermark("voicebot_default", "product") == POINT


def test_postgresql_uri_as_written(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    as_written = sa.make_url(postgres_url).set(drivername="postgresql")
    monkeypatch.setenv(ENV, as_written.render_as_string(hide_password=False))
    store = StateStore.from_airflow()
    assert store.engine.url.drivername == "postgresql+psycopg"
    assert store.engine.url.database == as_written.database
    _round_trip(store)
    store.dispose()


def test_mysql_uri_as_written_uses_pymysql_and_utf8mb4(
    mariadb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_written = sa.make_url(mariadb_url).set(drivername="mysql", query={})
    monkeypatch.setenv(ENV, as_written.render_as_string(hide_password=False))
    store = StateStore.from_airflow()
    assert store.engine.url.drivername == "mysql+pymysql"
    assert store.engine.url.query.get("charset") == "utf8mb4"
    _round_trip(store)
    store.dispose()


def test_sqlite_default_under_airflow_home_when_undefined(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    store = StateStore.from_airflow()
    expected = Path(os.environ["AIRFLOW_HOME"]) / "catalog-sync" / "state.sqlite"
    assert store.engine.url.get_backend_name() == "sqlite"
    assert Path(store.engine.url.database or "") == expected
    _round_trip(store)
    assert expected.is_file()
    store.dispose()


def test_a_defined_but_unusable_connection_is_refused_not_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV, "http://state.example:8080/")
    with pytest.raises(ConfigurationError, match=r"'catalog_sync_state' has the unsupported type"):
        StateStore.from_airflow()
