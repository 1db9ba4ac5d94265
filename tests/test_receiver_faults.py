"""`--test-control` faults really happen, the request log is right, and logs hold no secret."""

from __future__ import annotations

import pytest
import requests

from catalog_sync import protocol
from receiver_harness import Receiver, Tenant

OP = protocol.upsert_op("product", "shop:product:1", {"name": "Kava"})


@pytest.fixture
def tenant(shared_receiver: Receiver) -> Tenant:
    """A fresh tenant; the request log starts empty after its pairing."""
    paired = shared_receiver.pair()
    shared_receiver.clear()
    return paired


def test_a_status_fault_answers_once_then_the_call_works(tenant: Tenant) -> None:
    tenant.receiver.add_fault(method="GET", path=protocol.STATUS_PATH, action="status", status=500)
    first, second = tenant.status(), tenant.status()
    assert (first.status_code, first.json()["error"]["code"]) == (500, "injected_fault")
    assert second.status_code == 200


def test_a_429_fault_carries_retry_after(tenant: Tenant) -> None:
    tenant.receiver.add_fault(
        method="GET", path=protocol.STATUS_PATH, action="status", status=429, retry_after="7"
    )
    answer = tenant.status()
    assert (answer.status_code, answer.headers.get("Retry-After")) == (429, "7")


def test_a_status_fault_consumes_no_nonce(tenant: Tenant) -> None:
    """Answered before processing: the very same signed request then goes through."""
    tenant.receiver.add_fault(method="GET", path=protocol.STATUS_PATH, action="status", status=503)
    headers = tenant.headers("GET", protocol.STATUS_PATH)
    assert tenant.call("GET", protocol.STATUS_PATH, headers=headers).status_code == 503
    assert tenant.call("GET", protocol.STATUS_PATH, headers=headers).status_code == 200


def test_a_fault_for_several_times_hits_that_many_requests(tenant: Tenant) -> None:
    tenant.receiver.add_fault(
        method="GET", path=protocol.STATUS_PATH, action="status", status=502, times=2
    )
    assert [tenant.status().status_code for _ in range(3)] == [502, 502, 200]


def test_a_hang_fault_delays_the_answer_past_the_client_timeout(tenant: Tenant) -> None:
    tenant.receiver.add_fault(method="GET", path=protocol.STATUS_PATH, action="hang", seconds=2)
    with pytest.raises(requests.Timeout):
        tenant.call("GET", protocol.STATUS_PATH, timeout=0.5)
    assert tenant.status().status_code == 200


def test_a_drop_fault_closes_the_connection_without_an_answer(tenant: Tenant) -> None:
    tenant.receiver.add_fault(method="POST", path=protocol.EVENTS_PATH, action="drop")
    with pytest.raises(requests.ConnectionError):
        tenant.events("b1", [OP])
    assert tenant.entities() == []
    [logged] = tenant.receiver.requests()
    assert (logged["fault"], logged["status"]) == ("drop", None)


def test_a_drop_fault_on_upload_matches_the_upload_put(tenant: Tenant) -> None:
    body = protocol.dumps({"sync_type": "full", "expected_counts": {"product": 1}})
    upload_url = tenant.call("POST", protocol.INIT_PATH, body).json()["upload_url"]
    tenant.receiver.add_fault(method="PUT", path="/upload", action="drop")
    gzip_header = {"Content-Type": "application/gzip"}
    with pytest.raises(requests.ConnectionError):
        requests.put(upload_url, data=b"\x1f\x8b", headers=gzip_header, timeout=10)
    # Nothing was processed, so the same URL still takes the resend.
    assert requests.put(upload_url, data=b"\x1f\x8b", headers=gzip_header, timeout=10).ok


def test_status_after_applies_once_and_the_retry_replays(tenant: Tenant) -> None:
    """The lost-response case: processed, answered 503; the retry gets the stored answer."""
    tenant.receiver.add_fault(
        method="POST", path=protocol.EVENTS_PATH, action="status_after", status=503
    )
    lost = tenant.events("b1", [OP])
    assert lost.status_code == 503
    assert [line["external_id"] for line in tenant.entities()] == ["shop:product:1"]
    retry = tenant.events("b1", [OP])
    assert retry.json() == {"processed": 1, "idempotent_replay": True, "errors": []}


def test_the_request_log_records_each_request_without_its_signature(tenant: Tenant) -> None:
    body = protocol.events_body("b1", [protocol.dumps(OP)])
    headers = tenant.headers("POST", protocol.EVENTS_PATH, body)
    tenant.call("POST", protocol.EVENTS_PATH, body, headers=headers, idempotency_key="b1")
    [logged] = tenant.receiver.requests()
    assert logged["method"] == "POST"
    assert logged["path"] == protocol.EVENTS_PATH
    assert logged["status"] == 200
    assert logged["tenant_id"] == tenant.tenant_id
    assert logged["nonce"] == headers[protocol.HEADER_NONCE]
    assert logged["idempotency_key"] == "b1"
    assert logged["content_length"] == len(body)
    assert headers[protocol.HEADER_SIGNATURE] not in str(logged)


def test_clear_removes_faults_and_the_log(tenant: Tenant) -> None:
    tenant.receiver.add_fault(method="GET", path=protocol.STATUS_PATH, action="status", status=500)
    tenant.receiver.clear()
    assert tenant.status().status_code == 200
    tenant.receiver.clear()
    assert tenant.receiver.requests() == []


def test_the_log_has_a_line_per_request_and_never_the_secret_or_bodies(
    receiver: Receiver,
) -> None:
    marker = "payload-marker-3f9c"
    tenant = receiver.pair()
    op = protocol.upsert_op("product", "shop:product:1", {"name": marker})
    headers = tenant.headers("POST", protocol.EVENTS_PATH, protocol.events_body("b1", []))
    tenant.events("b1", [op])
    tenant.status()
    bad = dict(headers, **{protocol.HEADER_SIGNATURE: "0" * 64})
    tenant.call("GET", protocol.STATUS_PATH, headers=bad)
    receiver.stop()  # flushes and closes the log
    text = receiver.log_text()
    assert f"{protocol.EVENTS_PATH} 200 tenant={tenant.tenant_id}" in text
    assert f"{protocol.STATUS_PATH} 401" in text
    assert tenant.secret_b64 not in text
    assert tenant.key.hex() not in text
    assert marker not in text
    assert headers[protocol.HEADER_SIGNATURE] not in text
