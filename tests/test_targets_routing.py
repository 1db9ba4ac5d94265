"""Routing at the extraction: what a target's filter lets through, on every source database.

The queries only (no Airflow, no receiver): a row that stops belonging to a target is a
delete in the target's next window, a row that belongs again an upsert, a row never
routed to a target never reaches its snapshot.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from catalog_sync import extract, mapping
from catalog_sync.config import CatalogConfig, load_config
from catalog_sync.errors import ConfigurationError
from catalog_sync.mapping import Deletion, Entity
from catalog_sync.source import create_source_engine
from targets_support import (
    create_shop,
    entity_map,
    external_id,
    membership,
    now,
    platforms,
    products,
    uuid_of,
)

TARGETS = {
    "wholesale": {"kinds": ["product"], "filters": {"product": {"where": "price >= 200"}}},
    "regional": {"kinds": ["product"], "filters": {"product": {"membership": membership("a")}}},
    "everything": {},
}


@pytest.fixture
def engine(database_url: str) -> Any:
    engine = create_source_engine(database_url)
    create_shop(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog(tmp_path: Path) -> CatalogConfig:
    return load_config(entity_map(tmp_path / "map.yaml", TARGETS))


def _routed(catalog: CatalogConfig, target: str) -> CatalogConfig:
    return catalog.for_target(catalog.targets[target])


def _changes(engine: sa.Engine, catalog: CatalogConfig, target: str, since: dt.datetime) -> dict:
    """external id -> "upsert" / "delete" in the window [since, now + 1 s) of `target`."""
    routed = _routed(catalog, target)
    mapper = mapping.compile_mappers(routed, engine)["product"]
    window = extract.Window(low=since, high=now() + dt.timedelta(seconds=1))
    with engine.connect() as conn:
        items = list(extract.iter_changes(conn, routed, mapper, window))
    return {
        item.external_id: "upsert" if isinstance(item, Entity) else "delete"
        for item in items
        if isinstance(item, Entity | Deletion)
    }


def _snapshot(engine: sa.Engine, catalog: CatalogConfig, target: str) -> set[str]:
    routed = _routed(catalog, target)
    mapper = mapping.compile_mappers(routed, engine)["product"]
    with extract.snapshot_transaction(engine) as (conn, _point):
        return {item.external_id for item in extract.iter_snapshot(conn, routed, mapper)}


def _set_price(engine: sa.Engine, number: int, price: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            products.update()
            .where(products.c.uuid == uuid_of(number))
            .values(price=price, updated_at=now())
        )


def test_a_predicate_target_snapshot_holds_only_the_rows_it_matches(engine, catalog) -> None:
    assert _snapshot(engine, catalog, "wholesale") == {external_id(n) for n in (4, 5, 6, 7)}
    assert _snapshot(engine, catalog, "everything") == {external_id(n) for n in range(1, 8)}


def test_a_row_whose_predicate_turns_false_is_a_delete_then_an_upsert_when_true_again(
    engine, catalog
) -> None:
    since = now() - dt.timedelta(seconds=1)
    _set_price(engine, 5, 100)
    assert _changes(engine, catalog, "wholesale", since) == {external_id(5): "delete"}
    assert _changes(engine, catalog, "everything", since) == {external_id(5): "upsert"}

    since = now() - dt.timedelta(seconds=1)
    _set_price(engine, 5, 300)
    assert _changes(engine, catalog, "wholesale", since) == {external_id(5): "upsert"}


def test_a_soft_deleted_membership_row_is_a_delete_though_the_product_row_is_unchanged(
    engine, catalog
) -> None:
    since = now() - dt.timedelta(seconds=1)
    stamp = now()
    with engine.begin() as conn:
        conn.execute(
            platforms.update()
            .where(platforms.c.product_id == 10, platforms.c.platform == "a")
            .values(deleted_at=stamp, updated_at=stamp)
        )
    assert _changes(engine, catalog, "regional", since) == {external_id(1): "delete"}
    assert external_id(1) not in _snapshot(engine, catalog, "regional")


def test_a_new_membership_row_is_an_upsert_of_the_unchanged_product(engine, catalog) -> None:
    since = now() - dt.timedelta(seconds=1)
    with engine.begin() as conn:
        conn.execute(platforms.insert().values(product_id=40, platform="a", updated_at=now()))
    assert _changes(engine, catalog, "regional", since) == {external_id(4): "upsert"}


def test_a_membership_change_alone_keeps_the_targets_window_from_being_empty(
    engine, catalog
) -> None:
    """A delta plan commits an empty window without tasks: this one must be extracted."""
    config = _routed(catalog, "regional").kinds["product"]
    since = now() - dt.timedelta(seconds=1)  # the shop is a minute old

    def empty() -> bool:
        window = extract.Window(low=since, high=now() + dt.timedelta(seconds=1))
        with engine.connect() as conn:
            return extract.window_is_empty(conn, config, window)

    assert empty()
    with engine.begin() as conn:
        conn.execute(platforms.insert().values(product_id=40, platform="a", updated_at=now()))
    assert not empty()


def test_a_hard_deleted_membership_row_is_left_to_the_next_snapshot(engine, catalog) -> None:
    """The documented limit: no trace, no delta; the full's tombstone pass removes it."""
    since = now() - dt.timedelta(seconds=1)
    with engine.begin() as conn:
        conn.execute(
            platforms.delete().where(platforms.c.product_id == 20, platforms.c.platform == "a")
        )
    assert _changes(engine, catalog, "regional", since) == {}
    assert external_id(2) not in _snapshot(engine, catalog, "regional")


def test_a_filter_the_database_refuses_fails_the_plan_naming_the_target(
    engine, tmp_path: Path
) -> None:
    broken = {"wholesale": {"filters": {"product": {"where": "no_such_column > 1"}}}}
    catalog = load_config(entity_map(tmp_path / "map.yaml", broken))
    with pytest.raises(ConfigurationError, match=r"targets\.wholesale\.filters\.product: the filt"):
        extract.check_routes(engine, catalog, catalog.target_list("unused"))
