"""`redrive_items`: dead-letter entries re-read from their current rows, delivered again.

Source rows and the state tables share one real database per test (SQLite, PostgreSQL,
MariaDB for the lifecycle); the receiver is the real one.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from catalog_sync.config import load_config
from catalog_sync.delivery import PRIMARY_KEY_MARKER, deliver_batches, record_failures
from catalog_sync.mapping import Deletion, Entity, MappingFailure, compile_mappers
from catalog_sync.redrive import Unlocatable, redrive_items, row_key
from dlq_support import (
    ENTITY_MAP,
    TARGET,
    batches,
    catalog_for,
    held_names,
    items,
    make_shop,
    mapped_items,
    mapper_for,
    paired_hook,
    stage,
    state_store,
    write_map,
)
from receiver_harness import Receiver


@pytest.fixture
def receiver(shared_receiver: Receiver) -> Receiver:
    return shared_receiver


def redriven(engine: sa.Engine, catalog, mapper, state, **kwargs) -> list:
    with engine.connect() as conn:
        return list(
            redrive_items(conn, catalog, mapper, state, target=TARGET, kind="product", **kwargs)
        )


def set_name(engine: sa.Engine, item_id: int, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(items.update().where(items.c.id == item_id).values(name=name))


def test_a_rejected_op_is_redriven_from_the_fixed_row_and_resolved(
    receiver: Receiver, database_url: str, tmp_path: Path
) -> None:
    engine = make_shop(database_url, 1000, empty_names=[500])
    catalog = catalog_for(tmp_path)
    mapper = mapper_for(catalog, engine)
    state = state_store(database_url)
    hook, tenant = paired_hook(receiver)
    # Row 500 has no name: send it as a stricter backend would see it (module docstring
    # of test_delivery), so the receiver rejects it one op among 1,000.
    first = [
        Entity("product", item.external_id, {"name": ""})
        if isinstance(item, MappingFailure)
        else item
        for item in mapped_items(engine, mapper)
    ]
    deliver_batches(
        hook, state, target=TARGET, kind="product", batches=batches(stage(tmp_path, first, "run-1"))
    )
    assert len(held_names(tenant)) == 999

    set_name(engine, 500, "Fixed at the source")
    again = redriven(engine, catalog, mapper, state)
    tally = deliver_batches(
        hook, state, target=TARGET, kind="product", batches=batches(stage(tmp_path, again, "run-2"))
    )

    assert [item.external_id for item in again] == ["laravel:product:500"]
    assert (tally.accepted, tally.dead_lettered) == (1, 0)
    assert held_names(tenant)["laravel:product:500"] == "Fixed at the source"
    [entry] = state.dead_letter_list(TARGET, include_resolved=True)
    assert entry.status == "resolved"


def test_an_unmappable_row_is_dead_lettered_then_redriven_once_fixed(
    receiver: Receiver, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    engine = make_shop(url, 5, empty_names=[3])
    catalog = catalog_for(tmp_path)
    mapper = mapper_for(catalog, engine)
    state = state_store(url)
    hook, tenant = paired_hook(receiver)
    manifest = stage(tmp_path, mapped_items(engine, mapper), "run-1")
    deliver_batches(hook, state, target=TARGET, kind="product", batches=batches(manifest))
    record_failures(state, target=TARGET, kind="product", failures_uri=manifest["failures"]["uri"])
    [entry] = state.dead_letter_list(TARGET)
    assert entry.external_id == "laravel:product:3" and "payload.name" in entry.error

    set_name(engine, 3, "Now named")
    again = stage(tmp_path, redriven(engine, catalog, mapper, state), "run-2")
    deliver_batches(hook, state, target=TARGET, kind="product", batches=batches(again))

    assert held_names(tenant)["laravel:product:3"] == "Now named"
    assert state.dead_letter_list(TARGET) == []


def test_a_row_still_broken_yields_its_failure_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    engine = make_shop(url, 3, empty_names=[2])
    catalog = catalog_for(tmp_path)
    state = state_store(url)
    state.dead_letter_record(TARGET, "product", "laravel:product:2", "upsert", None, "x: y")

    [item] = redriven(engine, catalog, mapper_for(catalog, engine), state)

    assert isinstance(item, MappingFailure) and item.primary_key == 2


def test_a_hard_deleted_row_becomes_a_delete(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    engine = make_shop(url, 3)
    catalog = catalog_for(tmp_path)
    state = state_store(url)
    state.dead_letter_record(TARGET, "product", "laravel:product:2", "upsert", None, "x: y")
    with engine.begin() as conn:
        conn.execute(items.delete().where(items.c.id == 2))

    assert redriven(engine, catalog, mapper_for(catalog, engine), state) == [
        Deletion("product", "laravel:product:2")
    ]


def test_a_soft_deleted_row_becomes_a_delete(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    engine = make_shop(url, 3)
    catalog = catalog_for(tmp_path)
    state = state_store(url)
    state.dead_letter_record(TARGET, "product", "laravel:product:2", "upsert", None, "x: y")
    with engine.begin() as conn:
        conn.execute(
            items.update().where(items.c.id == 2).values(deleted_at=dt.datetime(2026, 2, 1))
        )

    assert redriven(engine, catalog, mapper_for(catalog, engine), state) == [
        Deletion("product", "laravel:product:2")
    ]


def test_an_exhausted_entry_is_not_redriven(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    engine = make_shop(url, 3)
    catalog = catalog_for(tmp_path)
    state = state_store(url)
    state.dead_letter_record(
        TARGET, "product", "laravel:product:2", "upsert", None, "x: y", max_attempts=1
    )

    assert redriven(engine, catalog, mapper_for(catalog, engine), state) == []


def test_entry_ids_limit_the_redrive(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    engine = make_shop(url, 3)
    catalog = catalog_for(tmp_path)
    state = state_store(url)
    state.dead_letter_record(TARGET, "product", "laravel:product:1", "upsert", None, "x: y")
    second = state.dead_letter_record(
        TARGET, "product", "laravel:product:2", "upsert", None, "x: y"
    )

    got = redriven(engine, catalog, mapper_for(catalog, engine), state, entry_ids=[second])

    assert [item.external_id for item in got] == ["laravel:product:2"]


def test_an_entry_keyed_by_primary_key_is_redriven_and_handed_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    engine = make_shop(url, 3)
    catalog = catalog_for(tmp_path)
    state = state_store(url)
    state.dead_letter_record(TARGET, "product", f"{PRIMARY_KEY_MARKER}3", "upsert", None, "x: y")

    got = redriven(engine, catalog, mapper_for(catalog, engine), state)

    assert [item.external_id for item in got] == ["laravel:product:3"]
    assert state.dead_letter_list(TARGET) == []


def test_an_id_of_another_kind_becomes_a_mapping_failure(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    engine = make_shop(url, 1)
    catalog = catalog_for(tmp_path)
    state = state_store(url)
    state.dead_letter_record(TARGET, "product", "laravel:category:1", "upsert", None, "x: y")

    [item] = redriven(engine, catalog, mapper_for(catalog, engine), state)

    assert isinstance(item, MappingFailure) and "cannot locate" in item.error


def test_row_key_inverts_a_template_and_a_translation_suffix(tmp_path: Path) -> None:
    text = ENTITY_MAP.replace("external_id: id", "external_id: '{sku}/{id}'").replace(
        "    map:\n",
        "    translations: {locales: [en, uk], base: en, columns: {name: 'name_{locale}'}}\n"
        "    map:\n",
    )
    catalog = load_config(write_map(tmp_path, text))
    mapper = compile_mappers(catalog, None)["product"]

    key = row_key("laravel:product:AB-7/42:uk", mapper, catalog)

    assert key.values == (("sku", "AB-7"), ("id", "42"))


def test_row_key_refuses_an_id_the_template_cannot_render(tmp_path: Path) -> None:
    text = ENTITY_MAP.replace("external_id: id", "external_id: '{sku}/{id}'")
    catalog = load_config(write_map(tmp_path, text))
    mapper = compile_mappers(catalog, None)["product"]

    with pytest.raises(Unlocatable, match="does not fit"):
        row_key("laravel:product:no-slash", mapper, catalog)
