"""Spec 5 against the real receiver: every signed request is verified, in order.

Each refused request is an `events` batch that would apply an entity, so every test
also checks that a refusal applies nothing (read straight from the receiver's database).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from catalog_sync import protocol
from receiver_harness import Receiver, Tenant

OP = protocol.upsert_op("product", "shop:product:1", {"name": "Kava"})
BODY = protocol.events_body("batch-1", [protocol.dumps(OP)])


@pytest.fixture
def tenant(shared_receiver: Receiver) -> Tenant:
    return shared_receiver.pair()


def applied(tenant: Tenant) -> dict[str, int]:
    return tenant.receiver.store.entity_counts(tenant.tenant_id)


def send_events(tenant: Tenant, headers: dict[str, str], body: bytes = BODY) -> requests.Response:
    headers = {**headers, protocol.HEADER_IDEMPOTENCY: "batch-1"}
    return requests.post(
        f"{tenant.ingest_url}{protocol.EVENTS_PATH}", data=body, headers=headers, timeout=30
    )


def assert_refused(answer: requests.Response, status: int, code: str, tenant: Tenant) -> None:
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text
    assert answer.json()["error"]["message"]
    assert applied(tenant) == {}


def test_a_correctly_signed_batch_is_applied(tenant: Tenant) -> None:
    """The control case for the refusals below: the same request, untampered, works."""
    answer = send_events(tenant, tenant.headers("POST", protocol.EVENTS_PATH, BODY))
    assert answer.status_code == 200, answer.text
    assert applied(tenant) == {"product": 1}


def _other_tenant(tenant: Tenant, headers: dict[str, str]) -> None:
    headers[protocol.HEADER_TENANT] = tenant.receiver.pair().tenant_id


def _timestamp(_tenant: Tenant, headers: dict[str, str]) -> None:
    headers[protocol.HEADER_TIMESTAMP] = str(int(headers[protocol.HEADER_TIMESTAMP]) - 1)


def _nonce(_tenant: Tenant, headers: dict[str, str]) -> None:
    headers[protocol.HEADER_NONCE] = protocol.new_nonce()


def _signature(_tenant: Tenant, headers: dict[str, str]) -> None:
    signature = headers[protocol.HEADER_SIGNATURE]
    headers[protocol.HEADER_SIGNATURE] = ("0" if signature[0] != "0" else "1") + signature[1:]


@pytest.mark.parametrize(
    "alter",
    [_other_tenant, _timestamp, _nonce, _signature],
    ids=["tenant", "timestamp", "nonce", "signature"],
)
def test_an_altered_signed_header_is_a_bad_signature(
    tenant: Tenant, alter: Callable[[Tenant, dict[str, str]], None]
) -> None:
    headers = tenant.headers("POST", protocol.EVENTS_PATH, BODY)
    alter(tenant, headers)
    assert_refused(send_events(tenant, headers), 401, "bad_signature", tenant)


def test_an_altered_body_is_a_bad_signature(tenant: Tenant) -> None:
    headers = tenant.headers("POST", protocol.EVENTS_PATH, BODY)
    other = protocol.events_body(
        "batch-1", [protocol.dumps(protocol.upsert_op("product", "shop:product:2", {"name": "X"}))]
    )
    assert_refused(send_events(tenant, headers, other), 401, "bad_signature", tenant)


def test_an_altered_path_is_a_bad_signature(tenant: Tenant) -> None:
    headers = tenant.headers("POST", protocol.INIT_PATH, BODY)
    assert_refused(send_events(tenant, headers), 401, "bad_signature", tenant)


def test_an_altered_method_is_a_bad_signature(tenant: Tenant) -> None:
    """Signed as POST, sent as GET to the one GET route."""
    headers = tenant.headers("POST", protocol.STATUS_PATH)
    answer = tenant.call("GET", protocol.STATUS_PATH, headers=headers)
    assert_refused(answer, 401, "bad_signature", tenant)


@pytest.mark.parametrize(
    "header",
    [
        protocol.HEADER_TENANT,
        protocol.HEADER_TIMESTAMP,
        protocol.HEADER_NONCE,
        protocol.HEADER_SIGNATURE,
    ],
)
def test_a_missing_signature_header_is_refused(tenant: Tenant, header: str) -> None:
    headers = tenant.headers("POST", protocol.EVENTS_PATH, BODY)
    del headers[header]
    assert_refused(send_events(tenant, headers), 401, "missing_signature_headers", tenant)


def test_protocol_version_1_needs_an_upgrade(tenant: Tenant) -> None:
    headers = tenant.headers("POST", protocol.EVENTS_PATH, BODY)
    headers[protocol.HEADER_PROTOCOL] = "1"
    assert_refused(send_events(tenant, headers), 426, "protocol_upgrade_required", tenant)


def test_an_unknown_tenant_is_not_paired(tenant: Tenant) -> None:
    headers = tenant.headers("POST", protocol.EVENTS_PATH, BODY)
    headers[protocol.HEADER_TENANT] = "t_nobody"
    assert_refused(send_events(tenant, headers), 401, "not_paired", tenant)


@pytest.mark.parametrize("offset", [-301, 301], ids=["301s-old", "301s-ahead"])
def test_a_timestamp_off_by_301_seconds_is_stale(tenant: Tenant, offset: int) -> None:
    headers = tenant.headers(
        "POST", protocol.EVENTS_PATH, BODY, timestamp=int(time.time()) + offset
    )
    assert_refused(send_events(tenant, headers), 401, "stale_timestamp", tenant)


def test_a_timestamp_that_is_not_digits_is_stale(tenant: Tenant) -> None:
    headers = tenant.headers("POST", protocol.EVENTS_PATH, BODY, timestamp="1e9")
    assert_refused(send_events(tenant, headers), 401, "stale_timestamp", tenant)


def test_a_replayed_nonce_is_refused(tenant: Tenant) -> None:
    """A second, validly signed request that reuses a nonce is refused and not applied."""
    nonce = protocol.new_nonce()
    first = tenant.call(
        "GET",
        protocol.STATUS_PATH,
        headers=tenant.headers("GET", protocol.STATUS_PATH, nonce=nonce),
    )
    assert first.status_code == 200, first.text
    headers = tenant.headers("POST", protocol.EVENTS_PATH, BODY, nonce=nonce)
    assert_refused(send_events(tenant, headers), 401, "nonce_replay", tenant)


def test_an_oversized_batch_is_refused_with_413(tenant: Tenant) -> None:
    big = {"name": "x" * protocol.MAX_BATCH_BYTES}
    body = protocol.events_body(
        "batch-1", [protocol.dumps(protocol.upsert_op("product", "shop:product:1", big))]
    )
    answer = send_events(tenant, tenant.headers("POST", protocol.EVENTS_PATH, body), body)
    assert_refused(answer, 413, "batch_too_large", tenant)


def test_an_oversized_chunked_body_is_refused_while_streaming(tenant: Tenant) -> None:
    """No Content-Length: the receiver counts while reading and stops past the limit."""
    body = b"{" + b" " * (protocol.MAX_BATCH_BYTES + 70_000) + b"}"
    headers = tenant.headers("POST", protocol.INIT_PATH, body)
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    answer = requests.post(
        f"{tenant.ingest_url}{protocol.INIT_PATH}", data=chunks, headers=headers, timeout=30
    )
    assert_refused(answer, 413, "body_too_large", tenant)


def test_malformed_json_is_a_400(tenant: Tenant) -> None:
    body = b'{"batch_id": "batch-1", "events": ['
    answer = send_events(tenant, tenant.headers("POST", protocol.EVENTS_PATH, body), body)
    assert_refused(answer, 400, "invalid_json", tenant)


def test_an_unknown_route_is_a_404_in_the_error_shape(shared_receiver: Receiver) -> None:
    answer = requests.get(shared_receiver.url("/api/v1/ingest/nothing"), timeout=10)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
