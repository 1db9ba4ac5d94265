"""Shared fixtures: real databases, an isolated Airflow home, the command line.

PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306) tests skip with a message that
says what is missing, unless CATALOG_SYNC_REQUIRE_DATABASES=1 (CI sets it), where a
missing server fails the test instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from catalog_sync.state import StateStore

pytest_plugins = ["receiver_harness"]

# Airflow reads AIRFLOW_HOME when first imported: point it at a scratch folder before
# any test module imports Airflow, so the tests never touch a real installation.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="catalog-sync-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__FERNET_KEY"] = Fernet.generate_key().decode()
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REQUIRE_DATABASES = os.environ.get("CATALOG_SYNC_REQUIRE_DATABASES") == "1"

PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
MARIADB_ADMIN = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def database_unavailable(server: str, error: Exception) -> None:
    message = (
        f"{server} is not reachable ({type(error).__name__}: {error}); start it to run this test"
    )
    if REQUIRE_DATABASES:
        pytest.fail(f"{message} (CATALOG_SYNC_REQUIRE_DATABASES=1 makes it mandatory)")
    pytest.skip(message)


def _scratch_name() -> str:
    return f"cs_test_{secrets.token_hex(4)}"


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards (skips when there is none)."""
    import psycopg

    name = _scratch_name()
    try:
        with psycopg.connect(**PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        database_unavailable("PostgreSQL at 127.0.0.1:5432", exc)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(**PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    with scratch_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """One fresh PostgreSQL database shared by a test module (for slow set-ups)."""
    with scratch_postgres() as url:
        yield url


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, empty MariaDB database, dropped afterwards."""
    import pymysql

    name = _scratch_name()
    try:
        conn = pymysql.connect(**MARIADB_ADMIN, connect_timeout=5, autocommit=True)
    except pymysql.err.OperationalError as exc:
        database_unavailable("MariaDB at 127.0.0.1:3306", exc)
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    yield f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
    conn = pymysql.connect(**MARIADB_ADMIN, autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shop.sqlite'}"


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test on each supported SQL database."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="session")
def airflow_env() -> dict[str, str]:
    """Environment of an Airflow home whose metadata database is migrated (with a Fernet key)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return env


@pytest.fixture
def run_cli(airflow_env: dict[str, str]):
    """Run `catalog-sync ARGS...` as a real process; returns the CompletedProcess."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "catalog-sync"), *args],
            env={**airflow_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    return run


@pytest.fixture
def store(database_url: str) -> Iterator[StateStore]:
    """A sync state store with its schema, on each supported database."""
    store = StateStore(database_url)
    store.ensure_schema()
    yield store
    store.dispose()
