"""Shared parts of the dead-letter tests: a small shop table, its map, a paired hook.

The shop is one `items` table (products) in a real database; the map publishes its
live rows. Delivery goes through the real `VoiceBotHook` to the real receiver.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa
from airflow.sdk import Connection

from catalog_sync import staging
from catalog_sync.config import CatalogConfig, load_config
from catalog_sync.hooks import VoiceBotHook
from catalog_sync.mapping import Deletion, Entity, KindMapper, MappingFailure, compile_mappers
from catalog_sync.source import create_source_engine
from catalog_sync.state import StateStore
from receiver_harness import Receiver, Tenant

TARGET = "vb_dlq"

ENTITY_MAP = """
producer: laravel
sync: {page_size: 1000, safety_lag_seconds: 0, overlap_seconds: 0}
kinds:
  product:
    table: items
    primary_key: id
    watermark: updated_at
    deleted_column: deleted_at
    external_id: id
    map:
      payload.name: name
      payload.price_amount: {money: price}
"""

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("price", sa.Numeric(10, 2), nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("deleted_at", sa.DateTime, nullable=True),
)


def write_map(folder: Path, text: str = ENTITY_MAP) -> Path:
    path = folder / "entity_map.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def catalog_for(folder: Path) -> CatalogConfig:
    return load_config(write_map(folder))


def make_shop(url: str, n: int, *, empty_names: Iterable[int] = ()) -> sa.Engine:
    """`items` 1..n; the ids in `empty_names` have an empty name (bad data)."""
    engine = create_source_engine(url)
    metadata.create_all(engine)
    now = dt.datetime(2026, 1, 1)
    empty = set(empty_names)
    if n == 0:
        return engine
    with engine.begin() as conn:
        conn.execute(
            items.insert(),
            [
                {
                    "id": i,
                    "name": "" if i in empty else f"Product {i}",
                    "price": f"{i}.50",
                    "updated_at": now,
                    "deleted_at": None,
                }
                for i in range(1, n + 1)
            ],
        )
    return engine


def mapper_for(catalog: CatalogConfig, engine: sa.Engine) -> KindMapper:
    return compile_mappers(catalog, engine)["product"]


def mapped_items(engine: sa.Engine, mapper: KindMapper) -> list[Entity | MappingFailure]:
    """Every live row of `items`, mapped (one page)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(items).where(items.c.deleted_at.is_(None)).order_by(items.c.id)
        ).mappings()
        return list(mapper.map_page(conn, list(rows)))


def stage(folder: Path, items_: Iterable[Entity | Deletion | MappingFailure], run_key: str) -> dict:
    """Stage items as `events` batches (500 ops each) under `folder`; the manifest."""
    base = folder / "staging" / run_key
    base.mkdir(parents=True, exist_ok=True)
    return staging.write_delta_batches(
        (base / "product.batches.ndjson.gz").as_uri(),
        "product",
        items_,
        run_key=run_key,
        window_key="test",
        failures_uri=(base / "product.failures.ndjson.gz").as_uri(),
    )


def batches(manifest: dict) -> list[tuple[str, bytes]]:
    return list(staging.iter_batches(manifest["uri"]))


def paired_hook(receiver: Receiver, **options: object) -> tuple[VoiceBotHook, Tenant]:
    """A hook on a fresh tenant of `receiver` (fast retries), and that tenant."""
    tenant = receiver.pair()
    connection = Connection(
        conn_id=TARGET,
        conn_type="voicebot",
        host=tenant.ingest_url,
        login=tenant.tenant_id,
        password=tenant.secret_b64,
        extra=json.dumps({"site_url": ""}),
    )
    settings: dict = {"backoff_base": 0.01, "timeout": 10.0, **options}
    return VoiceBotHook(TARGET, connection=connection, **settings), tenant


def state_store(url: str) -> StateStore:
    state = StateStore(url)
    state.ensure_schema()
    return state


def held_names(tenant: Tenant) -> dict[str, str]:
    """external id -> payload name of the products the receiver holds for the tenant."""
    return {
        line["external_id"]: line["payload"]["name"]
        for line in tenant.entities()
        if line["kind"] == "product"
    }


def cli_env(folder: Path, source_url: str, state_url: str, tenant: Tenant) -> dict[str, str]:
    """The environment of a deployment: source, state, staging, map and the paired target."""
    from dag_support import conn_json

    return {
        "AIRFLOW_CONN_CATALOG_SOURCE": conn_json(source_url),
        "AIRFLOW_CONN_CATALOG_SYNC_STATE": conn_json(state_url),
        f"AIRFLOW_CONN_{TARGET.upper()}": tenant.airflow_connection(),
        "CATALOG_SYNC_TARGET": TARGET,
        "CATALOG_SYNC_STAGING": (folder / "staging").as_uri(),
        "CATALOG_SYNC_CONFIG": str(write_map(folder)),
    }
