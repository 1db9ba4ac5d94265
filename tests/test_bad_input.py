"""Bad input: each bad row is dead-lettered with the key that failed, or arrives intact;
no other row is held back; a broken map or source is an error that names its key.

Most tests share one delta run of the real DAG (SQLite source, real receiver) over a
shop whose first products are broken in different ways; each checks one of them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from catalog_sync import demo_shop, extract, protocol
from catalog_sync.config import parse_config
from catalog_sync.errors import CatalogSyncError, ConfigurationError
from catalog_sync.extract import Window
from catalog_sync.mapping import Entity, compile_mappers
from catalog_sync.source import create_source_engine
from catalog_sync.sources import FIRST_RUN_LOW
from dag_support import SyncEnv, make_sync_env
from receiver_harness import Receiver

#: A text longer than the events batch byte limit: its op can never be sent.
HUGE = "a" * (protocol.MAX_BATCH_BYTES + 1024)
CONTROL_NAME = "Kava\x00\x07\x1b[31m\u200b"
TARGET = "voicebot_default"

#: Which product (by position among the live ones) is broken how.
BROKEN: dict[str, tuple[int, str]] = {
    "empty_name": (0, "UPDATE products SET name = '' WHERE id = :id"),
    "nan_price": (1, "UPDATE products SET price = 'NaN' WHERE id = :id"),
    "absurd_price": (2, "UPDATE products SET price = 1e20 WHERE id = :id"),
    "invalid_utf8": (3, "UPDATE products SET name = x'fffe41' WHERE id = :id"),
    "huge_row": (4, "UPDATE products SET short_description = :huge WHERE id = :id"),
}
NULLS = 5
CONTROL = 6


@pytest.fixture(scope="module")
def world(
    module_receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
    airflow_env: dict[str, str],
) -> Iterator[dict[str, Any]]:
    """The broken shop, one delta run over it, and what it left behind."""
    tmp = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as monkeypatch:
        env = make_sync_env(module_receiver, f"sqlite:///{tmp / 'shop.sqlite'}", tmp, monkeypatch)
        ids = _break_products(env.engine)
        env.wait_safety_lag()
        run = env.run("delta", {"kinds": ["product"]})
        state = env.state()
        try:
            dead = {e.external_id: e for e in state.dead_letter_pending(TARGET, "product")}
        finally:
            state.dispose()
        yield {
            "env": env,
            "run": run,
            "ids": ids,
            "dead": dead,
            "held": {line["external_id"]: line for line in env.held()},
        }


def _break_products(engine: sa.Engine) -> list[str]:
    products = demo_shop.products
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                sa.select(products.c.id)
                .where(products.c.deleted_at.is_(None))
                .order_by(products.c.id)
            ).scalars()
        )
        for position, statement in BROKEN.values():
            conn.execute(sa.text(statement), {"id": ids[position], "huge": HUGE})
        conn.execute(
            products.update()
            .where(products.c.id == ids[NULLS])
            .values(
                description=None,
                short_description=None,
                sale_price=None,
                attributes=None,
                name_uk=None,
                description_uk=None,
            )
        )
        conn.execute(
            products.update().where(products.c.id == ids[CONTROL]).values(name=CONTROL_NAME)
        )
    return [f"laravel:product:{i}" for i in ids]


def _dead_error(world: dict[str, Any], case: str) -> str:
    external_id = world["ids"][BROKEN[case][0]]
    assert external_id not in world["held"]
    return world["dead"][external_id].error


def test_the_run_succeeds_despite_the_bad_rows(world: dict[str, Any]) -> None:
    env: SyncEnv = world["env"]
    assert world["run"].state == "success", env.states(world["run"])


def test_every_other_product_arrived(world: dict[str, Any]) -> None:
    env: SyncEnv = world["env"]
    bad = {world["ids"][position] for position, _ in BROKEN.values()}
    expected = {line["external_id"] for line in env.expected() if line["kind"] == "product"}
    held = {key for key, line in world["held"].items() if line["kind"] == "product"}
    assert held == expected - bad
    assert set(world["dead"]) == bad


def test_a_bad_first_row_is_dead_lettered_naming_the_key(world: dict[str, Any]) -> None:
    assert "payload.name" in _dead_error(world, "empty_name")


def test_a_non_finite_price_is_dead_lettered_naming_the_key(world: dict[str, Any]) -> None:
    error = _dead_error(world, "nan_price")
    assert "payload.price_amount" in error and "NaN" in error


def test_an_absurd_price_is_dead_lettered_naming_the_key(world: dict[str, Any]) -> None:
    error = _dead_error(world, "absurd_price")
    assert "payload.price_amount" in error and "absurd" in error


def test_invalid_utf8_in_text_is_dead_lettered_naming_the_key(world: dict[str, Any]) -> None:
    error = _dead_error(world, "invalid_utf8")
    assert "payload.name" in error and "utf-8" in error.lower()


def test_a_row_larger_than_the_batch_limit_is_dead_lettered(world: dict[str, Any]) -> None:
    assert str(protocol.MAX_BATCH_BYTES) in _dead_error(world, "huge_row")


def test_nulls_in_optional_mapped_columns_arrive_as_nulls(world: dict[str, Any]) -> None:
    payload = world["held"][world["ids"][NULLS]]["payload"]
    assert payload["description"] is None
    assert payload["sale_price_amount"] is None


def test_control_characters_in_text_arrive_unchanged(world: dict[str, Any]) -> None:
    """They are valid JSON (escaped), so they are data, not an error."""
    assert world["held"][world["ids"][CONTROL]]["payload"]["name"] == CONTROL_NAME


def test_the_watermark_moves_past_the_dead_lettered_rows(world: dict[str, Any]) -> None:
    """Dead-lettered rows are kept in the dead letter, so the window may advance."""
    state = world["env"].state()
    try:
        assert state.watermark(TARGET, "product") is not None
    finally:
        state.dispose()


class BrokenSource:
    """A custom source that fails after its first entity (named by dotted path below)."""

    def __init__(self, config: Any, catalog: Any) -> None:
        self.kind = config.kind

    def changes(self, conn: sa.Connection, low: dt.datetime, high: dt.datetime) -> Iterator[Any]:
        yield Entity(self.kind, f"laravel:{self.kind}:1", {"title": "one"})
        raise KeyError("the API answered without 'items'")

    def snapshot(self, conn: sa.Connection) -> Iterator[Any]:
        return self.changes(conn, FIRST_RUN_LOW, FIRST_RUN_LOW)


@pytest.mark.parametrize("mode", ["delta", "snapshot"])
def test_a_broken_custom_source_fails_its_kind_naming_the_key(tmp_path: Path, mode: str) -> None:
    catalog = parse_config(
        {"kinds": {"cpt": {"source": f"{__name__}.BrokenSource"}}}, tmp_path / "map.yaml"
    )
    engine = create_source_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    root = tmp_path.as_uri()
    with pytest.raises(CatalogSyncError) as info:
        if mode == "delta":
            window = Window(None, dt.datetime(2024, 5, 1))
            extract.extract_delta(engine, catalog, "cpt", window, run_key="r", root=root)
        else:
            extract.extract_snapshot(engine, catalog, run_key="r", root=root)
    message = str(info.value)
    assert f"kinds.cpt.source: {__name__}.BrokenSource failed while streaming" in message
    assert "KeyError" in message and "items" in message


def test_the_map_check_names_a_missing_table_as_a_configuration_error(tmp_path: Path) -> None:
    """A map pointing at a table that does not exist fails the plan, naming the key."""
    engine = create_source_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    catalog = parse_config(
        {"kinds": {"tag": {"table": "no_such_table", "map": {"payload.name": "name"}}}},
        tmp_path / "map.yaml",
    )
    with pytest.raises(ConfigurationError, match=r"kinds\.tag\.table: unknown table"):
        compile_mappers(catalog, engine)


def test_a_duplicate_external_id_in_one_batch_keeps_the_last_write(
    shared_receiver: Receiver,
) -> None:
    """Two ops for one entity (e.g. a select that repeats a row) never fail the batch:
    they apply in order, as the same two ops in two windows would."""
    tenant = shared_receiver.pair()
    first = protocol.upsert_op("product", "shop:product:1", {"name": "First"})
    last = protocol.upsert_op("product", "shop:product:1", {"name": "Last"})
    answer = tenant.events("dup-1", [first, last])
    assert answer.json()["errors"] == []
    [held] = tenant.entities()
    assert held["payload"]["name"] == "Last"
