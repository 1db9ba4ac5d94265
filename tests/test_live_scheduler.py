"""The DAGs under a real scheduler: `airflow standalone`, not `dag.test()`.

One deployment per module, as an operator would run it: `airflow standalone` (api-server,
scheduler, dag-processor, triggerer; LocalExecutor with parallelism 4) in its own process
group, over a temporary AIRFLOW_HOME whose metadata database is SQLite (Airflow 3 runs
the LocalExecutor on SQLite; the tasks reach it through the api-server, so a second
database server buys nothing here). The project's `dags/` and `plugins/` folders, a demo
shop in PostgreSQL as `catalog_source`, the reference receiver on loopback and a paired
`voicebot_default` connection (AIRFLOW_CONN_*), all through the environment. The delta
DAG runs every few seconds (CATALOG_SYNC_DELTA_SCHEDULE as a duration) over the products
and categories of the demo map, so a run has few tasks.

Nothing is mocked. Every process started here is stopped by its process group, also when
a test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import secrets
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
import yaml
from cryptography.fernet import Fernet

from catalog_sync import demo_shop
from catalog_sync.receiver.process import free_port, stop_process_group
from catalog_sync.source import create_source_engine
from catalog_sync.state import StateStore
from dag_support import SAFETY_LAG_S, conn_json, fast_map
from receiver_harness import BIN, Receiver, Tenant

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "catalog_delta"
KINDS = ("product", "category")
SCHEDULE = "10s"
PRODUCTS = 30
#: Bounds of every wait (a loaded 2-core machine is slow; a healthy run takes ~30 s).
START_TIMEOUT_S = 240.0
RUN_TIMEOUT_S = 240.0
FINISHED = ("success", "failed")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DagRun:
    run_id: str
    run_type: str
    state: str
    start_date: dt.datetime | None


@dataclasses.dataclass
class Deployment:
    """A running `airflow standalone` and the world it syncs."""

    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    stdout_path: Path
    shop: sa.Engine
    tenant: Tenant

    def airflow(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """`airflow ARGS...` against this deployment's home, as an operator types it."""
        return subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of the metadata database (SQLite, opened read-only)."""
        uri = f"{(self.home / 'airflow.db').as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
            return db.execute(sql, args).fetchall()

    def paused(self) -> bool | None:
        """Whether the delta DAG is paused; None until the DAG processor has parsed it."""
        try:
            rows = self.query("SELECT is_paused FROM dag WHERE dag_id = ?", DAG_ID)
        except sqlite3.OperationalError:  # standalone has not created or migrated it yet
            return None
        return bool(rows[0][0]) if rows else None

    def runs(self) -> list[DagRun]:
        """The delta DAG's runs."""
        rows = self.query(
            "SELECT run_id, run_type, state, start_date FROM dag_run WHERE dag_id = ?", DAG_ID
        )
        return [
            DagRun(run_id, run_type, state, _utc(start) if start else None)
            for run_id, run_type, state, start in rows
        ]

    def task_states(self, run_id: str) -> dict[str, str]:
        rows = self.query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            DAG_ID,
            run_id,
        )
        return {f"{task}[{index}]": str(state) for task, index, state in rows}

    def wait(self, what: str, found: Callable[[], T | None], timeout_s: float) -> T:
        """Poll `found` until it returns something; fail (with the log's tail) after timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"airflow standalone exited ({self.process.returncode}) {self.tail()}")
            result = found()
            if result is not None:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout_s:.0f} s {self.tail()}")
            time.sleep(1)

    def finished_run(self, what: str, match: Callable[[DagRun], bool]) -> DagRun:
        """Wait for a finished run that `match`es; assert it succeeded."""
        run = self.wait(
            what,
            lambda: next((r for r in self.runs() if match(r) and r.state in FINISHED), None),
            RUN_TIMEOUT_S,
        )
        assert run.state == "success", f"{run} ended {run.state}: {self.task_states(run.run_id)}"
        return run

    def ledger(self, run_id: str) -> dict[str, Any]:
        """kind -> the run ledger line the DAG wrote for `run_id`."""
        store = StateStore(f"sqlite:///{self.home / 'catalog-sync' / 'state.sqlite'}")
        try:
            return {line.kind: line for line in store.ledger(limit=500) if line.run_id == run_id}
        finally:
            store.dispose()

    def products(self) -> dict[str, dict[str, Any]]:
        """The receiver's products (base locale), by external id."""
        return {
            line["external_id"]: line["payload"]
            for line in self.tenant.entities()
            if line["kind"] == "product" and "translation_of" not in line
        }

    def tail(self) -> str:
        text = self.stdout_path.read_text(encoding="utf-8", errors="replace")
        return f"; airflow standalone says:\n{text[-3000:]}"

    def stop(self) -> None:
        stop_process_group(self.process, grace_s=30)


def _utc(text: str) -> dt.datetime:
    """A naive UTC timestamp as Airflow stores it in SQLite."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _entity_map(path: Path) -> Path:
    """The demo map (1 s safety lag) reduced to KINDS: a run of a few tasks."""
    data = yaml.safe_load(fast_map(path).read_text())
    data["kinds"] = {kind: data["kinds"][kind] for kind in KINDS}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _standalone_env(home: Path, shop_url: str, tenant: Tenant) -> dict[str, str]:
    port = free_port()
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        # No login: the test drives Airflow through its CLI, which needs none.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        # Not the fixed defaults 8793 / 8794: other Airflow processes may run here.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW_CONN_CATALOG_SOURCE": conn_json(shop_url),
        "AIRFLOW_CONN_VOICEBOT_DEFAULT": tenant.airflow_connection(),
        "CATALOG_SYNC_CONFIG": str(_entity_map(home.parent / "entity_map.yaml")),
        "CATALOG_SYNC_DELTA_SCHEDULE": SCHEDULE,
        "CATALOG_SYNC_RETRIES": "1",
        "CATALOG_SYNC_RETRY_DELAY_SECONDS": "1",
        "CATALOG_SYNC_MAX_RETRY_DELAY_SECONDS": "2",
        "CATALOG_SYNC_LOCK_TIMEOUT_SECONDS": "60",
    }


@pytest.fixture(scope="module")
def deployment(
    module_postgres_url: str,
    module_receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """`airflow standalone` with the delta DAG unpaused; stopped by process group."""
    shop = create_source_engine(module_postgres_url)
    demo_shop.create_demo_shop(shop, PRODUCTS, seed=3)
    tenant = module_receiver.pair(site_url="")
    work = tmp_path_factory.mktemp("live")
    home = work / "airflow"
    home.mkdir()
    env = _standalone_env(home, module_postgres_url, tenant)
    stdout_path = work / "standalone.log"
    with stdout_path.open("wb") as stdout:
        process = subprocess.Popen(
            [str(BIN / "airflow"), "standalone"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    live = Deployment(home, env, process, stdout_path, shop, tenant)
    try:
        live.wait("catalog_delta DAG parsed", live.paused, START_TIMEOUT_S)
        done = live.airflow("dags", "unpause", DAG_ID)
        assert done.returncode == 0, done.stderr[-3000:]
        assert live.paused() is False, done.stdout
        yield live
    finally:
        live.stop()
        shop.dispose()


def test_the_scheduler_runs_the_delta_on_its_own_and_it_delivers_changed_rows(
    deployment: Deployment,
) -> None:
    first = deployment.finished_run("first scheduled run", lambda r: r.run_type == "scheduled")
    assert set(deployment.ledger(first.run_id)) == set(KINDS)
    changed = demo_shop.change_some_products(deployment.shop)
    changed_at = dt.datetime.now(dt.UTC)
    soft = f"laravel:product:{changed['soft_deleted']}"
    assert soft in deployment.products(), "the first run did not deliver the shop"

    # A run that starts after the safety lag has passed plans a window that holds the changes.
    after = changed_at + dt.timedelta(seconds=SAFETY_LAG_S + 0.5)
    run = deployment.finished_run(
        "scheduled run after the change",
        lambda r: r.run_type == "scheduled" and r.start_date is not None and r.start_date > after,
    )
    held = deployment.products()
    assert held[f"laravel:product:{changed['updated']}"]["name"] == "Renamed by the demo"
    assert f"laravel:product:{changed['inserted']}" in held
    assert soft not in held
    assert deployment.ledger(run.run_id)["product"].accepted >= 3


def test_a_run_triggered_by_hand_with_since_re_sends_what_the_watermark_cannot_see(
    deployment: Deployment,
) -> None:
    # A row edited without touching updated_at (a careless bulk import): no scheduled
    # delta sees it, a `since` older than its updated_at re-sends it.
    products = demo_shop.products
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=1)
    with deployment.shop.begin() as conn:
        product_id, updated_at = conn.execute(
            sa.select(products.c.id, products.c.updated_at)
            .where(products.c.deleted_at.is_(None), products.c.updated_at < old)
            .order_by(products.c.id.desc())
            .limit(1)
        ).one()
        conn.execute(
            products.update().where(products.c.id == product_id).values(name="Sent by since")
        )
    since = (updated_at.replace(tzinfo=dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    before = {run.run_id for run in deployment.runs()}

    done = deployment.airflow("dags", "trigger", "-c", json.dumps({"since": since}), DAG_ID)
    assert done.returncode == 0, done.stderr[-3000:]

    run = deployment.finished_run(
        "manual run", lambda r: r.run_type == "manual" and r.run_id not in before
    )
    assert deployment.products()[f"laravel:product:{product_id}"]["name"] == "Sent by since"
    assert deployment.ledger(run.run_id)["product"].accepted >= 1


def test_an_invalid_since_is_refused_by_the_trigger_command(deployment: Deployment) -> None:
    """Refused by `airflow dags trigger` itself (the param's JSON schema), not later at
    `plan`: no run is created."""
    before = {run.run_id for run in deployment.runs()}

    done = deployment.airflow("dags", "trigger", "-c", '{"since": "yesterday"}', DAG_ID)

    assert done.returncode == 1
    assert "Invalid input for param since: 'yesterday' is not a 'date-time'" in done.stderr
    created = [run for run in deployment.runs() if run.run_id not in before]
    assert [run for run in created if run.run_type == "manual"] == []


def test_the_shared_secret_is_in_no_log_file(deployment: Deployment) -> None:
    deployment.finished_run("successful run", lambda r: r.state == "success")
    logs = [path for path in (deployment.home / "logs").rglob("*") if path.is_file()]
    push_logs = [path for path in logs if "task_id=per_kind.push" in str(path)]
    assert push_logs, "no push task log was written: the check below would prove nothing"

    secret = deployment.tenant.secret_b64
    leaked = [
        str(path)
        for path in [*logs, deployment.stdout_path]
        if secret in path.read_text(encoding="utf-8", errors="replace")
    ]

    assert leaked == []
