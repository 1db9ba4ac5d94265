"""Pairing, status, events and unpair against the real receiver process."""

from __future__ import annotations

import base64
import concurrent.futures
import re

import pytest
import requests

from catalog_sync import protocol
from receiver_harness import TEST_PLUGIN_VERSION, Receiver, Tenant


def pair_with(receiver: Receiver, code: str) -> requests.Response:
    body = {
        "pair_code": code,
        "site_url": "https://shop.example",
        "provider_id": "tests",
        "plugin_version": TEST_PLUGIN_VERSION,
        "shop_name": "Kava & Co",
    }
    return requests.post(
        receiver.url(protocol.PAIR_PATH),
        data=protocol.dumps(body),
        headers=protocol.unsigned_headers(TEST_PLUGIN_VERSION),
        timeout=10,
    )


def product(number: int, name: str = "Kava") -> dict:
    return protocol.upsert_op("product", f"shop:product:{number}", {"name": name})


@pytest.fixture
def tenant(shared_receiver: Receiver) -> Tenant:
    return shared_receiver.pair()


def payloads(tenant: Tenant) -> dict[str, dict]:
    return {
        line["external_id"]: line["payload"]
        for line in map(
            protocol.loads, tenant.receiver.store.dump_lines(tenant_id=tenant.tenant_id)
        )
    }


# --- pairing ---------------------------------------------------------------------------


def test_issue_code_prints_only_a_code_of_the_documented_shape(shared_receiver: Receiver) -> None:
    assert re.fullmatch(r"VB-[A-Z0-9]{4}-[A-Z0-9]{4}", shared_receiver.issue_code())


def test_a_good_code_pairs_a_new_tenant(shared_receiver: Receiver) -> None:
    answer = pair_with(shared_receiver, shared_receiver.issue_code())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ingest_url"] == shared_receiver.base_url
    assert body["protocol_version"] == 2
    assert len(base64.b64decode(body["shared_secret_b64"], validate=True)) == 32
    tenant = Tenant(
        shared_receiver, body["tenant_id"], body["shared_secret_b64"], body["ingest_url"]
    )
    assert tenant.status().json()["provider_status"] == "connected"


def test_a_used_code_is_refused(shared_receiver: Receiver) -> None:
    code = shared_receiver.issue_code()
    assert pair_with(shared_receiver, code).status_code == 200
    again = pair_with(shared_receiver, code)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "pair_code_used")


def test_an_unknown_code_is_refused(shared_receiver: Receiver) -> None:
    answer = pair_with(shared_receiver, "VB-NOPE-NOPE")
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "pair_code_unknown")


def test_an_expired_code_is_refused(shared_receiver: Receiver) -> None:
    code = shared_receiver.store.issue_pair_code(shared_receiver.base_url, ttl=0)
    answer = pair_with(shared_receiver, code)
    assert (answer.status_code, answer.json()["error"]["code"]) == (410, "pair_code_expired")


def test_pairing_without_a_code_is_a_400(shared_receiver: Receiver) -> None:
    answer = requests.post(
        shared_receiver.url(protocol.PAIR_PATH),
        data=b'{"site_url": ""}',
        headers=protocol.unsigned_headers(TEST_PLUGIN_VERSION),
        timeout=10,
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_request")
    assert "pair_code" in answer.json()["error"]["message"]


# --- status ----------------------------------------------------------------------------


def test_status_reports_connected_and_live_entities_per_kind(tenant: Tenant) -> None:
    tenant.events("b1", [product(1), product(2), protocol.delete_op("product", "shop:product:2")])
    tenant.events("b2", [protocol.upsert_op("category", "shop:category:1", {"name": "Kava"})])
    answer = tenant.status()
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "provider_status": "connected",
        "tenant_id": tenant.tenant_id,
        "entities": {"category": 1, "product": 1},
    }


# --- events ----------------------------------------------------------------------------


def test_a_valid_batch_is_applied(tenant: Tenant) -> None:
    translated = protocol.upsert_op(
        "product",
        "shop:product:1:uk",
        {"name": "Кава"},
        lang="uk",
        translation_of="shop:product:1",
    )
    answer = tenant.events("b1", [product(1), translated])
    assert answer.json() == {"processed": 2, "idempotent_replay": False, "errors": []}
    lines = [
        protocol.loads(line)
        for line in tenant.receiver.store.dump_lines(tenant_id=tenant.tenant_id)
    ]
    assert lines == [
        {"kind": "product", "external_id": "shop:product:1", "payload": {"name": "Kava"}},
        {
            "kind": "product",
            "external_id": "shop:product:1:uk",
            "payload": {"name": "Кава"},
            "lang": "uk",
            "translation_of": "shop:product:1",
        },
    ]


def test_a_delete_marks_the_entity_deleted_and_an_upsert_revives_it(tenant: Tenant) -> None:
    tenant.events("b1", [product(1)])
    tenant.events("b2", [protocol.delete_op("product", "shop:product:1")])
    assert payloads(tenant) == {}
    tenant.events("b3", [product(1, "Kava 2")])
    assert payloads(tenant) == {"shop:product:1": {"name": "Kava 2"}}


def test_a_mixed_batch_applies_the_valid_ops_and_lists_the_invalid(tenant: Tenant) -> None:
    ops = [
        product(1),
        protocol.upsert_op("product", "shop:product:2", {"sku": "no name"}),
        {"type": "merge", "entity_kind": "product", "external_id": "shop:product:3"},
        protocol.upsert_op("gadget", "shop:gadget:4", {"name": "x"}),
        protocol.upsert_op("page", "not-an-id", {"title": "About"}),
        protocol.upsert_op("page", "shop:page:6", {"title": "About"}),
    ]
    answer = tenant.events("b1", ops)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["processed"], body["idempotent_replay"]) == (2, False)
    assert [(e["index"], e["external_id"], e["code"]) for e in body["errors"]] == [
        (1, "shop:product:2", "invalid_payload"),
        (2, "shop:product:3", "unknown_type"),
        (3, "shop:gadget:4", "unknown_kind"),
        (4, "not-an-id", "invalid_external_id"),
    ]
    assert all(e["message"] for e in body["errors"])
    assert payloads(tenant) == {
        "shop:product:1": {"name": "Kava"},
        "shop:page:6": {"title": "About"},
    }


def test_a_replayed_batch_returns_the_stored_response_and_applies_nothing(tenant: Tenant) -> None:
    ops = [product(1, "first"), {"type": "upsert"}]
    first = tenant.events("b1", ops).json()
    tenant.events("b2", [product(1, "second")])
    replay = tenant.events("b1", ops)
    assert replay.status_code == 200, replay.text
    assert replay.json() == {**first, "idempotent_replay": True}
    assert payloads(tenant) == {"shop:product:1": {"name": "second"}}


def test_concurrent_batches_with_one_key_apply_once(tenant: Tenant) -> None:
    ops = [product(n) for n in range(50)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: tenant.events("same-key", ops), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert sorted(a.json()["idempotent_replay"] for a in answers) == [False, True, True, True]


def test_an_idempotency_key_other_than_the_batch_id_is_refused(tenant: Tenant) -> None:
    body = protocol.events_body("b1", [protocol.dumps(product(1))])
    answer = tenant.call("POST", protocol.EVENTS_PATH, body, idempotency_key="b2")
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "idempotency_key_mismatch")
    assert payloads(tenant) == {}


def test_a_batch_without_idempotency_key_is_refused(tenant: Tenant) -> None:
    body = protocol.events_body("b1", [protocol.dumps(product(1))])
    answer = tenant.call("POST", protocol.EVENTS_PATH, body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "missing_idempotency_key")
    assert payloads(tenant) == {}


def test_a_batch_of_501_ops_is_too_large(tenant: Tenant) -> None:
    answer = tenant.events("b1", [product(n) for n in range(protocol.MAX_BATCH_EVENTS + 1)])
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "batch_too_large")
    assert payloads(tenant) == {}


# --- unpair ----------------------------------------------------------------------------


def test_after_unpair_signed_calls_are_not_paired(tenant: Tenant) -> None:
    answer = tenant.call("POST", protocol.UNPAIR_PATH)
    assert answer.status_code == 200, answer.text
    after = tenant.status()
    assert (after.status_code, after.json()["error"]["code"]) == (401, "not_paired")


# --- bad input -------------------------------------------------------------------------

BAD_INPUT = [
    (protocol.EVENTS_PATH, b"[]"),
    (protocol.EVENTS_PATH, b'{"batch_id": "k", "events": {"type": "upsert"}}'),
    (protocol.EVENTS_PATH, b'{"batch_id": 7, "events": []}'),
    (protocol.EVENTS_PATH, b'{"batch_id": "k", "events": [1e400]}'),
    (protocol.EVENTS_PATH, "\ufeff{}".encode()),
    (protocol.INIT_PATH, b'{"sync_type": "delta", "expected_counts": {"product": 1}}'),
    (protocol.INIT_PATH, b'{"sync_type": "full", "expected_counts": {"gadget": 1}}'),
    (protocol.INIT_PATH, b'{"sync_type": "full", "expected_counts": {"product": true}}'),
    (protocol.INIT_PATH, b'{"sync_type": "full", "expected_counts": []}'),
    (protocol.FINALIZE_PATH, b'{"sync_id": ["x"]}'),
    (protocol.FINALIZE_PATH, b'{"sync_id": "nope\\u0000"}'),
    (protocol.FINALIZE_PATH, b'{"sync_id": "no-such-sync"}'),
    (protocol.FINALIZE_PATH, b"\xff\xfe"),
]


@pytest.mark.parametrize(("path", "body"), BAD_INPUT)
def test_bad_input_gets_a_4xx_with_a_message(tenant: Tenant, path: str, body: bytes) -> None:
    """A malformed request body gets a clear 4xx in the error shape, never a 500.

    (A well-formed batch with malformed ops is answered 200 with per-op errors.)
    """
    answer = tenant.call("POST", path, body, idempotency_key="k")
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]["message"]


def test_ops_that_a_database_cannot_store_are_reported_not_crashed_on(tenant: Tenant) -> None:
    ops = [
        protocol.upsert_op("product", "shop:product:\x00", {"name": "nul"}),
        protocol.upsert_op("product", "shop:product:" + "9" * 600, {"name": "long"}),
        protocol.upsert_op("product", "shop:product:1", {"name": "ok \x00 in payload"}),
    ]
    body = tenant.events("b1", ops).json()
    assert [(e["index"], e["code"]) for e in body["errors"]] == [
        (0, "invalid_external_id"),
        (1, "invalid_external_id"),
    ]
    assert payloads(tenant) == {"shop:product:1": {"name": "ok \x00 in payload"}}
