"""Running the real DAGs with `dag.test()` against a real receiver and a real source database.

`sync_env` wires one test's world through the environment, the way a deployment does:
the source (`AIRFLOW_CONN_CATALOG_SOURCE`), the state database
(`AIRFLOW_CONN_CATALOG_SYNC_STATE`, a fresh SQLite file), the paired target
(`AIRFLOW_CONN_VOICEBOT_DEFAULT`), the staging root and an entity map whose safety lag
is 1 s (the demo map's 5 s would make every test wait).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from catalog_sync import demo_shop
from catalog_sync.config import default_config_path, load_config
from catalog_sync.demo import mapped_shop, sorted_lines
from catalog_sync.source import create_source_engine

PRODUCTS = 60
SAFETY_LAG_S = 1


def conn_json(url: str) -> str:
    """An Airflow connection (JSON form) for a SQLAlchemy URL."""
    parsed = sa.make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return json.dumps({"conn_type": "sqlite", "host": parsed.database})
    return json.dumps(
        {
            "conn_type": parsed.drivername,
            "host": parsed.host,
            "port": parsed.port,
            "login": parsed.username,
            "password": parsed.password,
            "schema": parsed.database,
            "extra": dict(parsed.query),
        }
    )


def fast_map(path: Path) -> Path:
    """The demo map with a 1 s safety lag."""
    data = yaml.safe_load(default_config_path().read_text())
    data["sync"]["safety_lag_seconds"] = SAFETY_LAG_S
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclasses.dataclass
class SyncEnv:
    receiver: Any
    source_url: str
    state_url: str
    tmp: Path
    engine: sa.Engine
    #: Every variable this world sets (for subprocesses such as `catalog-sync sync`).
    vars: dict[str, str] = dataclasses.field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            "AIRFLOW_CONN_CATALOG_SOURCE": conn_json(self.source_url),
            "AIRFLOW_CONN_CATALOG_SYNC_STATE": conn_json(self.state_url),
            "CATALOG_SYNC_STAGING": (self.tmp / "staging").as_uri(),
            "CATALOG_SYNC_CONFIG": str(fast_map(self.tmp / "entity_map.yaml")),
            "CATALOG_SYNC_RETRY_DELAY_SECONDS": "0",
            "CATALOG_SYNC_MAX_RETRY_DELAY_SECONDS": "1",
            "CATALOG_SYNC_LOCK_TIMEOUT_SECONDS": "30",
        }

    def run(self, mode: str, conf: dict[str, Any] | None = None, **build: Any) -> Any:
        """One run of the delta or full DAG in this process; returns the DagRun."""
        from catalog_sync import dag_factory

        builder = dag_factory.build_delta_dag if mode == "delta" else dag_factory.build_full_dag
        dag = builder(**build)
        dag_factory.register(dag)
        return dag.test(run_conf=conf or {})

    def states(self, run: Any) -> dict[str, str]:
        """task id (with map index) -> final state."""
        return {
            f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id: ti.state
            for ti in run.get_task_instances()
        }

    def state(self) -> Any:
        from catalog_sync.state import StateStore

        return StateStore(self.state_url)

    def expected(self) -> list[dict[str, Any]]:
        """The mapped source, staged by the test itself (what the receiver should hold)."""
        return mapped_shop(self.engine, load_config(), (self.tmp / "expected").as_uri())

    def held(self) -> list[dict[str, Any]]:
        return sorted_lines(iter(self.receiver.dump()))

    def wait_safety_lag(self) -> None:
        """Rows younger than the safety lag wait for the next window."""
        time.sleep(SAFETY_LAG_S + 0.2)


def make_sync_env(
    receiver: Any,
    source_url: str,
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    state_url: str | None = None,
) -> SyncEnv:
    engine = create_source_engine(source_url)
    demo_shop.create_demo_shop(engine, PRODUCTS, seed=3)
    state_url = state_url or f"sqlite:///{tmp / 'state.sqlite'}"
    env = SyncEnv(receiver, source_url, state_url, tmp, engine)
    tenant = receiver.pair(site_url="")
    env.vars = {**env.env(), "AIRFLOW_CONN_VOICEBOT_DEFAULT": tenant.airflow_connection()}
    for name, value in env.vars.items():
        monkeypatch.setenv(name, value)
    receiver.clear()  # the pairing calls are not the DAG's
    return env


def blank_a_product_name(engine: sa.Engine) -> str:
    """Empty the required name of one live product (the last); returns its external id."""
    products = demo_shop.products
    with engine.begin() as conn:
        bad = conn.execute(
            sa.select(sa.func.max(products.c.id)).where(products.c.deleted_at.is_(None))
        ).scalar_one()
        conn.execute(products.update().where(products.c.id == bad).values(name=""))
    return f"laravel:product:{bad}"
