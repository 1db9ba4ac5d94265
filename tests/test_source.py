"""The source database connection: Airflow connection URIs work as written."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from catalog_sync import source
from catalog_sync.errors import ConfigurationError


def _airflow_style(url: str) -> str:
    """`postgresql+psycopg://...` -> `postgresql://...`: the URI as an Airflow user writes it."""
    parsed = make_url(url)
    scheme = parsed.get_backend_name()
    return parsed.set(drivername=scheme, query={}).render_as_string(hide_password=False)


def _connects_through_env(monkeypatch: pytest.MonkeyPatch, uri: str) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_CATALOG_SOURCE", uri)
    engine = source.create_source_engine()
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT 'reached'")).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgresql_uri_from_airflow_env_works_as_written(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = _airflow_style(postgres_url)
    assert uri.startswith("postgresql://postgres@127.0.0.1:5432/")
    assert _connects_through_env(monkeypatch, uri) == "reached"


@pytest.mark.mariadb
def test_mysql_uri_from_airflow_env_works_as_written(
    mariadb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = _airflow_style(mariadb_url)
    assert uri.startswith("mysql://root@127.0.0.1:3306/")
    assert _connects_through_env(monkeypatch, uri) == "reached"


def test_sqlite_file_uri_from_airflow_env_works(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _connects_through_env(monkeypatch, sqlite_url) == "reached"


@pytest.mark.parametrize(
    ("written", "driver"),
    [
        ("postgresql://u@h:5432/shop", "postgresql+psycopg"),
        ("postgres://u@h/shop", "postgresql+psycopg"),
        ("mysql://root@h:3306/shop", "mysql+pymysql"),
        ("mariadb://root@h:3306/shop", "mariadb+pymysql"),
    ],
)
def test_schemes_map_to_installed_drivers(written: str, driver: str) -> None:
    url = source.normalize_url(written)
    assert url.drivername == driver
    if "mysql" in driver or "mariadb" in driver:
        assert url.query["charset"] == "utf8mb4"


def test_unknown_scheme_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CATALOG_SOURCE", "oracle://scott@db:1521/shop")
    with pytest.raises(ConfigurationError, match=r"unsupported type 'oracle'.*postgresql://"):
        source.resolve_url()


def test_missing_connection_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CATALOG_SOURCE", raising=False)
    with pytest.raises(ConfigurationError, match="AIRFLOW_CONN_CATALOG_SOURCE="):
        source.resolve_url("catalog_source")


def test_password_is_hidden_in_messages() -> None:
    engine = source.create_source_engine("postgresql://shop:hunter2@127.0.0.1:5432/shop")
    assert "hunter2" not in source.safe_url(engine)
    engine.dispose()


def test_connection_in_airflow_metadata_database_works_outside_a_task(
    airflow_env: dict[str, str], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection stored in the metadata DB (as `airflow connections add` does) is found."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    conn_id = "catalog_source_metadata_test"
    monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}", raising=False)
    with create_session() as session:
        session.add(Connection(conn_id=conn_id, uri=sqlite_url))
    try:
        assert source.resolve_url(conn_id) == source.normalize_url(sqlite_url)
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == conn_id).delete()
