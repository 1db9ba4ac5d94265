"""A small shop routed to two targets (two real receivers on loopback), for the targets tests.

`products` carries a stable `uuid` (the external id) besides its auto-increment id;
`product_platforms` says which platform (target) a product belongs to, with its own
`updated_at` and soft delete, the way a Laravel pivot model does. Target `shop_a` gets the
products with a live `platform = 'a'` row, `shop_b` those with `'b'`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from catalog_sync.source import create_source_engine
from dag_support import SAFETY_LAG_S, conn_json

meta = sa.MetaData()
products = sa.Table(
    "products",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("price", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("deleted_at", sa.DateTime, nullable=True),
)
platforms = sa.Table(
    "product_platforms",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("product_id", sa.Integer, nullable=False),
    sa.Column("platform", sa.String(20), nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("deleted_at", sa.DateTime, nullable=True),
)

#: product number -> the platforms it belongs to (3 to A only, 2 to B only, 1 to both, 1 to none).
ROUTES = {1: "a", 2: "a", 3: "a", 4: "b", 5: "b", 6: "ab", 7: ""}
TARGETS = {"a": "shop_a", "b": "shop_b"}


def uuid_of(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


def external_id(number: int) -> str:
    return f"laravel:product:{uuid_of(number)}"


def membership(platform: str) -> dict[str, Any]:
    return {
        "table": "product_platforms",
        "local_key": "product_id",
        "column": "platform",
        "value": platform,
        "watermark": "updated_at",
        "deleted_column": "deleted_at",
    }


def entity_map(path: Path, targets: dict[str, Any] | None = None) -> Path:
    """The map: one product kind keyed by uuid, and (default) the two membership targets."""
    default = {
        name: {"kinds": ["product"], "filters": {"product": {"membership": membership(p)}}}
        for p, name in TARGETS.items()
    }
    document = {
        "producer": "laravel",
        "sync": {"safety_lag_seconds": SAFETY_LAG_S, "overlap_seconds": 300},
        "kinds": {
            "product": {
                "table": "products",
                "watermark": "updated_at",
                "deleted_column": "deleted_at",
                "external_id": "uuid",
                "map": {"payload.name": "name", "payload.price": {"integer": "price"}},
            }
        },
        "targets": default if targets is None else targets,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def now() -> dt.datetime:
    """Naive UTC (the source's watermark columns hold UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def create_shop(engine: sa.Engine) -> None:
    meta.drop_all(engine)
    meta.create_all(engine)
    stamp = now() - dt.timedelta(minutes=1)
    with engine.begin() as conn:
        for number, routes in ROUTES.items():
            conn.execute(
                products.insert().values(
                    id=number * 10,  # auto-increment ids differ from the uuids on purpose
                    uuid=uuid_of(number),
                    name=f"Product {number}",
                    price=50 * number,
                    updated_at=stamp,
                )
            )
            for platform in routes:
                conn.execute(
                    platforms.insert().values(
                        product_id=number * 10, platform=platform, updated_at=stamp
                    )
                )


@dataclasses.dataclass
class TwoTargets:
    engine: sa.Engine
    receivers: dict[str, Any]  # target name -> Receiver
    tenants: dict[str, Any]  # target name -> its paired Tenant
    state_url: str
    tmp: Path
    vars: dict[str, str]

    def held(self, target: str) -> dict[str, dict[str, Any]]:
        """external id -> payload of what the target's receiver holds (its tenant's dump)."""
        return {line["external_id"]: line["payload"] for line in self.tenants[target].entities()}

    def expected(self, target: str) -> dict[str, str]:
        """external id -> name of the live products routed to `target` right now."""
        platform = next(p for p, name in TARGETS.items() if name == target)
        query = (
            sa.select(products.c.uuid, products.c.name)
            .where(products.c.deleted_at.is_(None))
            .where(
                sa.exists().where(
                    platforms.c.product_id == products.c.id,
                    platforms.c.platform == platform,
                    platforms.c.deleted_at.is_(None),
                )
            )
        )
        with self.engine.connect() as conn:
            return {f"laravel:product:{uuid}": name for uuid, name in conn.execute(query)}

    def names(self, target: str) -> dict[str, str]:
        return {eid: payload["name"] for eid, payload in self.held(target).items()}

    def run(self, *, full: bool, conf: dict[str, Any] | None = None) -> Any:
        from catalog_sync.runner import run_once

        return run_once(full=full, conf=conf or {})

    def state(self) -> Any:
        from catalog_sync.state import StateStore

        return StateStore(self.state_url)

    def watermark(self, target: str) -> dt.datetime | None:
        state = self.state()
        try:
            return state.watermark(target, "product")
        finally:
            state.dispose()

    def rename(self, number: int, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                products.update()
                .where(products.c.uuid == uuid_of(number))
                .values(name=name, updated_at=now())
            )

    def move(self, number: int, source: str, destination: str) -> None:
        """Soft-delete the product's `source` membership and add one for `destination`."""
        stamp = now()
        with self.engine.begin() as conn:
            conn.execute(
                platforms.update()
                .where(platforms.c.product_id == number * 10, platforms.c.platform == source)
                .values(deleted_at=stamp, updated_at=stamp)
            )
            conn.execute(
                platforms.insert().values(
                    product_id=number * 10, platform=destination, updated_at=stamp
                )
            )

    def wait_safety_lag(self) -> None:
        """Rows younger than the safety lag wait for the next window."""
        time.sleep(SAFETY_LAG_S + 0.2)


def make_two_targets(
    receivers: dict[str, Any],
    source_url: str,
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    targets: dict[str, Any] | None = None,
) -> TwoTargets:
    """The shop, a fresh tenant per target (each its own paired connection), the environment.

    `receivers` (target name -> Receiver) may be shared by a module: every test pairs its
    own tenants and reads only their data; faults and the request log are cleared here.
    """
    engine = create_source_engine(source_url)
    create_shop(engine)
    tenants = {}
    # The state shares a server database with the shop, but not a SQLite file (one writer).
    state_url = f"sqlite:///{tmp / 'state.sqlite'}" if "sqlite" in source_url else source_url
    env = {
        "AIRFLOW_CONN_CATALOG_SOURCE": conn_json(source_url),
        "AIRFLOW_CONN_CATALOG_SYNC_STATE": conn_json(state_url),
        "CATALOG_SYNC_STAGING": (tmp / "staging").as_uri(),
        "CATALOG_SYNC_CONFIG": str(entity_map(tmp / "entity_map.yaml", targets)),
        "CATALOG_SYNC_RETRY_DELAY_SECONDS": "0",
        "CATALOG_SYNC_MAX_RETRY_DELAY_SECONDS": "1",
        "CATALOG_SYNC_LOCK_TIMEOUT_SECONDS": "30",
    }
    for name in TARGETS.values():
        tenants[name] = receivers[name].pair(site_url="")
        env[f"AIRFLOW_CONN_{name.upper()}"] = tenants[name].airflow_connection()
        receivers[name].clear()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return TwoTargets(engine, receivers, tenants, state_url, tmp, env)


def target_receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two real receivers on loopback, one per target (a module fixture's body)."""
    from receiver_harness import start_receiver

    started = {}
    try:
        for name in TARGETS.values():
            workdir = tmp_path_factory.mktemp(name)
            started[name] = start_receiver(f"sqlite:///{workdir / 'receiver.sqlite'}", workdir)
        yield started
    finally:
        for receiver in started.values():
            receiver.stop()


def secrets_of(world: TwoTargets) -> list[str]:
    return [tenant.secret_b64 for tenant in world.tenants.values()]
