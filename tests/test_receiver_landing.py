"""Landing handlers at the real receiver: conflict policies, replays, snapshots, custom classes.

Each test starts `catalog-sync receiver serve --landing FILE` on loopback with the target
application's tables already in its database, and talks the signed protocol to it.
"""

from __future__ import annotations

import dataclasses
import decimal
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import yaml

from catalog_sync import protocol
from catalog_sync.errors import ConfigurationError
from catalog_sync.receiver import landing
from dlq_support import TARGET, paired_hook, state_store
from landing_support import TESTS, create_target, event_log, landing_file, products, target_rows
from receiver_harness import Receiver, Tenant, run_receiver_cli


@dataclasses.dataclass
class World:
    receiver: Receiver
    tenant: Tenant
    target: sa.Engine

    def row(self, uuid: str) -> dict[str, Any] | None:
        return target_rows(self.target, live_only=False).get(uuid)

    def edit_locally(self, uuid: str, title: str) -> None:
        """What a person does in the target application."""
        with self.target.begin() as conn:
            conn.execute(products.update().where(products.c.uuid == uuid).values(title=title))

    def stored_payload(self, external_id: str) -> dict[str, Any]:
        (line,) = [e for e in self.tenant.entities() if e["external_id"] == external_id]
        return line["payload"]


@pytest.fixture
def world(make_receiver: Callable[..., Receiver], tmp_path: Path) -> Callable[..., World]:
    """`world(db_url, conflict=..., **product settings)`: a receiver landing products."""
    engines: list[sa.Engine] = []

    def make(db_url: str, conflict: str = "update", **product: Any) -> World:
        target = create_target(db_url)
        engines.append(target)
        path = landing_file(tmp_path / f"landing-{len(engines)}.yaml", conflict, **product)
        receiver = make_receiver(db_url, ["--landing", str(path)])
        return World(receiver, receiver.pair(), target)

    yield make
    for engine in engines:
        engine.dispose()


def product(uuid: str, name: str, price: int = 19999, **more: Any) -> dict[str, Any]:
    payload = {"name": name, "sku": f"SKU-{uuid}", "price_amount": price, **more}
    return protocol.upsert_op("product", f"shop:product:{uuid}", payload)


def delete(uuid: str) -> dict[str, Any]:
    return protocol.delete_op("product", f"shop:product:{uuid}")


def events(world: World, batch_id: str, *ops: dict[str, Any]) -> dict[str, Any]:
    answer = world.tenant.events(batch_id, list(ops))
    assert answer.status_code == 200, answer.text
    return answer.json()


def full_sync(world: World, lines: list[dict[str, Any]], key: str = "final-1") -> requests.Response:
    data = gzip.compress(b"".join(protocol.dumps(line) + b"\n" for line in lines))
    counts: dict[str, int] = {}
    for line in lines:
        counts[line["kind"]] = counts.get(line["kind"], 0) + 1
    body = protocol.dumps({"sync_type": "full", "expected_counts": counts})
    started = world.tenant.call("POST", protocol.INIT_PATH, body).json()
    put = requests.put(
        started["upload_url"], data=data, headers={"Content-Type": "application/gzip"}, timeout=30
    )
    assert put.status_code == 200, put.text
    final = protocol.dumps({"sync_id": started["sync_id"]})
    return world.tenant.call("POST", protocol.FINALIZE_PATH, final, idempotency_key=key)


def line(uuid: str, name: str) -> dict[str, Any]:
    return protocol.snapshot_line("product", f"shop:product:{uuid}", {"name": name})


# --- coercion and the key ------------------------------------------------------------------


def test_payload_keys_land_in_renamed_columns_with_their_types(world, sqlite_url: str) -> None:
    w = world(sqlite_url)
    payload = {
        "stock_status": "instock",
        "stock_quantity": "7",
        "attributes": [{"name": "Color", "slug": "color", "values": ["Red"]}],
        "seo": {"title": "Buy A"},
    }
    answer = events(w, "b1", product("u-1", "A", 1999, **payload))
    assert answer["errors"] == []
    assert w.row("u-1") == {
        "title": "A",
        "sku": "SKU-u-1",
        "price": decimal.Decimal("19.99"),
        "in_stock": True,
        "stock_quantity": 7,
        "attributes": [{"name": "Color", "slug": "color", "values": ["Red"]}],
        "seo_title": "Buy A",
    }


def test_a_value_that_cannot_be_coerced_is_a_per_op_error(world, sqlite_url: str) -> None:
    w = world(sqlite_url)
    answer = events(w, "b1", product("u-1", "A"), product("u-2", "B", price=12.5))
    assert answer["processed"] == 1
    [error] = answer["errors"]
    assert (error["index"], error["external_id"], error["code"]) == (
        1,
        "shop:product:u-2",
        "landing_invalid_value",
    )
    assert "payload.price_amount" in error["message"] and "products.price" in error["message"]
    assert w.row("u-2") is None and w.row("u-1") is not None


def test_an_integer_key_column_gets_the_id_as_a_number(world, sqlite_url: str) -> None:
    w = world(sqlite_url, key="id", columns={"title": "payload.name", "uuid": "payload.sku"})
    answer = events(w, "b1", product("42", "A"), product("x42", "B"))
    assert [(e["index"], e["code"]) for e in answer["errors"]] == [(1, "landing_invalid_value")]
    with w.target.connect() as conn:
        assert conn.execute(sa.select(products.c.id, products.c.title)).all() == [(42, "A")]


def test_translations_stay_in_the_entity_store_only(world, sqlite_url: str) -> None:
    w = world(sqlite_url)
    translation = protocol.upsert_op(
        "product", "shop:product:u-1:uk", {"name": "A (uk)"}, "uk", "shop:product:u-1"
    )
    assert events(w, "b1", product("u-1", "A"), translation)["errors"] == []
    assert list(target_rows(w.target)) == ["u-1"]
    assert len(w.tenant.entities()) == 2


# --- conflict policies ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def policy_url(request: pytest.FixtureRequest) -> str:
    """The policy tests on SQLite and PostgreSQL; MariaDB runs the fingerprint test below."""
    return request.getfixturevalue(f"{request.param}_url")


def test_a_row_changed_only_by_the_receiver_is_not_a_conflict(world, database_url: str) -> None:
    """On every database: the fingerprint is read back per dialect and must be stable."""
    w = world(database_url, conflict="error")
    events(w, "b1", product("u-1", "A", stock_status="instock", attributes=[{"a": [1, "x"]}]))
    answer = events(w, "b2", product("u-1", "A2", 5, stock_status="outofstock"))
    assert answer["errors"] == []
    assert w.row("u-1")["title"] == "A2"


def test_update_policy_overwrites_a_locally_changed_row(world, policy_url: str) -> None:
    w = world(policy_url, conflict="update")
    events(w, "b1", product("u-1", "A"))
    w.edit_locally("u-1", "Local edit")
    answer = events(w, "b2", product("u-1", "A2"))
    assert (answer["errors"], answer.get("skipped")) == ([], None)
    assert w.row("u-1")["title"] == "A2"


def test_skip_policy_keeps_the_local_row_and_reports_the_op_skipped(world, policy_url: str) -> None:
    w = world(policy_url, conflict="skip")
    events(w, "b1", product("u-1", "A"), product("u-2", "B"))
    w.edit_locally("u-1", "Local edit")
    answer = events(w, "b2", product("u-1", "A2"), product("u-2", "B2"))
    assert answer["errors"] == [] and answer["processed"] == 2
    assert [(s["index"], s["code"]) for s in answer["skipped"]] == [(0, "landing_skipped")]
    assert w.row("u-1")["title"] == "Local edit"
    assert w.row("u-2")["title"] == "B2"
    assert w.stored_payload("shop:product:u-1")["name"] == "A2"  # the entity store follows


def test_error_policy_rejects_the_op_with_a_per_op_error(world, policy_url: str) -> None:
    w = world(policy_url, conflict="error")
    events(w, "b1", product("u-1", "A"), product("u-2", "B"))
    w.edit_locally("u-1", "Local edit")
    answer = events(w, "b2", product("u-2", "B2"), delete("u-1"))
    assert answer["processed"] == 1
    [error] = answer["errors"]
    assert (error["index"], error["external_id"], error["code"]) == (
        1,
        "shop:product:u-1",
        "landing_conflict",
    )
    assert w.row("u-1")["title"] == "Local edit"
    assert w.stored_payload("shop:product:u-1")["name"] == "A"  # rejected: not applied anywhere
    assert w.row("u-2")["title"] == "B2"


def test_a_rejected_op_is_dead_lettered_by_the_sender(world, sqlite_url: str, tmp_path) -> None:
    """The real hook and delivery code: the conflict becomes a dead-letter entry."""
    from catalog_sync import delivery

    w = world(sqlite_url, conflict="error")
    events(w, "b1", product("u-1", "A"))
    w.edit_locally("u-1", "Local edit")
    hook, _tenant = paired_hook(w.receiver)
    state = state_store(f"sqlite:///{tmp_path / 'state.sqlite'}")
    body = protocol.events_body("b2", [protocol.dumps(product("u-1", "A2"))])
    tally = delivery.deliver_batches(
        hook, state, target=TARGET, kind="product", batches=[("b2", body)]
    )
    [entry] = state.dead_letter_pending(TARGET, "product")
    state.dispose()
    assert (tally.dead_lettered, entry.external_id) == (1, "shop:product:u-1")
    assert "landing_conflict" in entry.error


# --- atomicity ---------------------------------------------------------------------------------


def test_a_row_the_target_database_refuses_is_a_per_op_error(world, policy_url: str) -> None:
    """A unique clash (two records claim the same local id) must not fail the whole batch."""
    columns = {"title": "payload.name", "id": {"from": "payload.local_id", "type": "integer"}}
    w = world(policy_url, columns=columns)
    answer = events(w, "b1", product("u-1", "A", local_id=7), product("u-2", "B", local_id=7))
    assert [(e["index"], e["code"]) for e in answer["errors"]] == [(1, "landing_failed")]
    assert list(target_rows(w.target)) == ["u-1"]
    assert [e["external_id"] for e in w.tenant.entities()] == ["shop:product:u-1"]


def test_a_replayed_batch_lands_nothing_twice(world, sqlite_url: str) -> None:
    w = world(sqlite_url, conflict="update")
    ops = [product("u-1", "A")]
    events(w, "b1", *ops)
    w.edit_locally("u-1", "Local edit")
    answer = events(w, "b1", *ops)
    assert answer["idempotent_replay"] is True
    assert w.row("u-1")["title"] == "Local edit"  # `update` would have overwritten it


def test_a_failed_finalize_lands_nothing(world, sqlite_url: str) -> None:
    w = world(sqlite_url)
    events(w, "b1", product("u-0", "Old"))
    bad = protocol.snapshot_line("product", "shop:product:u-2", {"name": "B", "price_amount": 1.5})
    answer = full_sync(w, [line("u-1", "A"), bad])
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "landing_invalid_value")
    assert list(target_rows(w.target)) == ["u-0"]
    assert [e["external_id"] for e in w.tenant.entities()] == ["shop:product:u-0"]


# --- snapshots -----------------------------------------------------------------------------------


def test_finalize_deletes_the_rows_the_snapshot_dropped(world, sqlite_url: str) -> None:
    w = world(sqlite_url)
    events(w, "b1", product("u-1", "A"), product("u-2", "B"), product("u-3", "C"))
    answer = full_sync(w, [line("u-1", "A1"), line("u-4", "D")])
    assert answer.status_code == 200, answer.text
    assert answer.json()["landing"] == {"product": {"landed": 2, "skipped": 0, "deleted": 2}}
    assert target_rows(w.target, live_only=False).keys() == {"u-1", "u-4"}


def test_finalize_soft_deletes_with_a_deleted_column(world, sqlite_url: str) -> None:
    w = world(sqlite_url, deleted_column="deleted_at")
    events(w, "b1", product("u-1", "A"), product("u-2", "B"))
    assert full_sync(w, [line("u-1", "A1")]).status_code == 200
    assert list(target_rows(w.target)) == ["u-1"]
    assert w.row("u-2")["title"] == "B"  # kept, with deleted_at set
    events(w, "b2", product("u-2", "B again"))
    assert list(target_rows(w.target)) == ["u-1", "u-2"]  # an upsert brings it back


def test_finalize_under_error_policy_refuses_a_conflict_and_applies_nothing(
    world, sqlite_url: str
) -> None:
    w = world(sqlite_url, conflict="error")
    events(w, "b1", product("u-1", "A"), product("u-2", "B"))
    w.edit_locally("u-2", "Local edit")
    answer = full_sync(w, [line("u-1", "A1")])
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "landing_conflict")
    assert "shop:product:u-2" in answer.json()["error"]["message"]
    assert [w.row(u)["title"] for u in ("u-1", "u-2")] == ["A", "Local edit"]


# --- custom handlers -----------------------------------------------------------------------------


def custom_world(make_receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    target = create_target(url)
    path = tmp_path / "landing.yaml"
    handler = {"handler": "landing_support:EventLogHandler", "options": {"table": "landed_events"}}
    path.write_text(yaml.safe_dump({"kinds": {"page": handler}}))
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the receiver imports the class
    receiver = make_receiver(url, ["--landing", str(path)])
    return World(receiver, receiver.pair(), target)


def logged(w: World) -> list[tuple[str, str]]:
    with w.target.connect() as conn:
        rows = conn.execute(sa.select(event_log).order_by(event_log.c.seq)).all()
    return [(row.action, row.external_id) for row in rows]


def test_a_custom_handler_class_lands_upserts_and_deletes(
    make_receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = custom_world(make_receiver, tmp_path, monkeypatch)
    page = protocol.upsert_op("page", "shop:page:1", {"title": "About"})
    events(w, "b1", page)
    events(w, "b2", protocol.delete_op("page", "shop:page:1"))
    assert logged(w) == [("upsert", "shop:page:1"), ("delete", "shop:page:1")]
    w.target.dispose()


def test_a_custom_handler_rejection_undoes_only_that_op(
    make_receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = custom_world(make_receiver, tmp_path, monkeypatch)
    refused = protocol.upsert_op("page", "shop:page:2", {"title": "No", "refuse": True})
    answer = events(w, "b1", protocol.upsert_op("page", "shop:page:1", {"title": "A"}), refused)
    assert [(e["index"], e["code"]) for e in answer["errors"]] == [(1, "refused_by_handler")]
    assert logged(w) == [("upsert", "shop:page:1")]  # the refused op's write was rolled back
    w.target.dispose()


# --- configuration -------------------------------------------------------------------------------


BAD_CONFIGS = [
    ({"table": "produkts"}, "kinds.product.table", "did you mean 'products'"),
    ({"key": "sku"}, "kinds.product.key", "add a unique index on products(sku)"),
    ({"conflict": "overwrite"}, "kinds.product.conflict", "give conflict: update | skip | error"),
    ({"columns": {"titel": "payload.name"}}, "kinds.product.columns.titel", "did you mean"),
    ({"columns": {"sku": "name"}}, "kinds.product.columns.sku.from", "give e.g. payload.name"),
    ({"columns": {"sku": "payload.sku"}}, "kinds.product.columns", "title is NOT NULL"),
    ({"deleted_column": "sku"}, "kinds.product.deleted_column", "nullable timestamp"),
    (
        {"columns": {"title": "payload.name", "uuid": "payload.uuid"}},
        "kinds.product.columns.uuid",
        "drop it from columns",
    ),
]


@pytest.fixture
def target_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    create_target(url).dispose()
    return url


def load_error(path: Path, url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with pytest.raises(ConfigurationError) as caught:
            landing.load(path, engine)
    finally:
        engine.dispose()
    return str(caught.value)


@pytest.mark.parametrize(("override", "key_path", "hint"), BAD_CONFIGS)
def test_a_bad_landing_file_names_file_key_path_and_fix(
    tmp_path: Path, target_url: str, override: dict[str, Any], key_path: str, hint: str
) -> None:
    message = load_error(landing_file(tmp_path / "landing.yaml", **override), target_url)
    assert message.startswith(f"landing.yaml: {key_path}:")
    assert hint in message and "; fix: " in message


def test_a_custom_handler_that_cannot_be_imported_is_refused(
    tmp_path: Path, target_url: str
) -> None:
    path = tmp_path / "landing.yaml"
    path.write_text(yaml.safe_dump({"kinds": {"page": {"handler": "nowhere.module:Cls"}}}))
    message = load_error(path, target_url)
    assert message.startswith("landing.yaml: kinds.page.handler:")
    assert "give an importable" in message


def test_a_bad_landing_file_stops_the_receiver_at_start(tmp_path: Path, target_url: str) -> None:
    path = landing_file(tmp_path / "landing.yaml", table="produkts")
    done = run_receiver_cli("serve", "--db", target_url, "--port", "0", "--landing", str(path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: landing.yaml: kinds.product.table: no table 'produkts'")
