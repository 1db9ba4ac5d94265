"""Landing handler test support: a target application's `products` table and landing files.

Also holds `EventLogHandler`, the custom handler the tests name in a landing file: the
receiver (a child process) imports it, so tests put this folder on its PYTHONPATH.
"""

from __future__ import annotations

import decimal
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Connection

from catalog_sync import protocol
from catalog_sync.receiver.landing import Rejected

TESTS = Path(__file__).resolve().parent

target_metadata = sa.MetaData()

#: The target application's own table (not the receiver's): its ids are its own.
products = sa.Table(
    "products",
    target_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(64), nullable=False, unique=True),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("sku", sa.String(64)),
    sa.Column("price", sa.Numeric(12, 2)),
    sa.Column("in_stock", sa.Boolean),
    sa.Column("stock_quantity", sa.Integer),
    sa.Column("attributes", sa.JSON),
    sa.Column("seo_title", sa.String(255)),
    sa.Column("local_note", sa.String(255)),
    sa.Column("deleted_at", sa.DateTime, nullable=True),
)

event_log = sa.Table(
    "landed_events",
    target_metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("external_id", sa.String(255), nullable=False),
    sa.Column("payload", sa.Text),
)

PRODUCT_COLUMNS: dict[str, Any] = {
    "title": "payload.name",  # a rename
    "sku": "payload.sku",
    "price": {"from": "payload.price_amount", "type": "decimal"},
    "in_stock": {"from": "payload.stock_status", "type": "boolean"},
    "stock_quantity": "payload.stock_quantity",
    "attributes": {"from": "payload.attributes", "type": "json"},
    "seo_title": "payload.seo.title",  # a nested payload key
}


def create_target(db_url: str) -> sa.Engine:
    """The target application's tables in the receiver's database (they exist before it starts)."""
    engine = sa.create_engine(db_url)
    target_metadata.create_all(engine)
    return engine


def landing_file(path: Path, conflict: str = "update", **product: Any) -> Path:
    """A landing file: products by uuid into `products`; `product=` overrides its keys."""
    settings = {
        "handler": "columns",
        "table": "products",
        "key": "uuid",
        "conflict": conflict,
        "columns": PRODUCT_COLUMNS,
        **product,
    }
    path.write_text(yaml.safe_dump({"kinds": {"product": settings}}, sort_keys=False))
    return path


def target_rows(engine: sa.Engine, *, live_only: bool = True) -> dict[str, dict[str, Any]]:
    """uuid -> the landed columns, normalised across databases."""
    query = sa.select(products).order_by(products.c.uuid)
    if live_only:
        query = query.where(products.c.deleted_at.is_(None))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {
        row.uuid: {
            "title": row.title,
            "sku": row.sku,
            "price": None if row.price is None else decimal.Decimal(row.price).quantize(CENT),
            "in_stock": None if row.in_stock is None else bool(row.in_stock),
            "stock_quantity": row.stock_quantity,
            "attributes": json.loads(row.attributes)
            if isinstance(row.attributes, str)
            else row.attributes,
            "seo_title": row.seo_title,
        }
        for row in rows
    }


CENT = decimal.Decimal("0.01")


def expected_rows(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the landing file above makes of the mapped products (base entities only)."""
    rows = {}
    for line in lines:
        if line["kind"] != "product" or "translation_of" in line:
            continue
        payload = line["payload"]
        price = payload.get("price_amount")
        rows[line["external_id"].split(":", 2)[2]] = {
            "title": payload["name"],
            "sku": payload.get("sku"),
            "price": None if price is None else (decimal.Decimal(price) / 100).quantize(CENT),
            "in_stock": payload.get("stock_status") == "instock",
            "stock_quantity": payload.get("stock_quantity"),
            "attributes": payload.get("attributes"),
            "seo_title": (payload.get("seo") or {}).get("title"),
        }
    return rows


class EventLogHandler:
    """A custom handler: appends every landed op to `landed_events`.

    Refuses payloads that carry `"refuse": true`, to show a per-op rejection.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        columns = ("action", "kind", "external_id", "payload")
        self.table = sa.table(options["table"], *(sa.column(name) for name in columns))

    def upsert(self, conn: Connection, kind: str, external_id: str, payload: Any) -> None:
        conn.execute(
            self.table.insert().values(
                action="upsert",
                kind=kind,
                external_id=external_id,
                payload=protocol.dumps(payload).decode(),
            )
        )
        if payload.get("refuse"):  # after a write: the savepoint must undo it
            raise Rejected("this payload asks to be refused", "refused_by_handler")

    def delete(self, conn: Connection, kind: str, external_id: str) -> None:
        conn.execute(
            self.table.insert().values(action="delete", kind=kind, external_id=external_id)
        )
