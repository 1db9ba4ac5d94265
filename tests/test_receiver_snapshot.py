"""The full snapshot (init, upload PUT, finalize, tombstones) against the real receiver."""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

import pytest
import requests

from catalog_sync import protocol
from receiver_harness import Receiver, Tenant

GZIP = {"Content-Type": "application/gzip"}


def snapshot(lines: Iterable[dict]) -> bytes:
    return gzip.compress(b"".join(protocol.dumps(line) + b"\n" for line in lines), compresslevel=1)


def products(numbers: Iterable[int]) -> Iterator[dict]:
    for n in numbers:
        yield protocol.snapshot_line("product", f"shop:product:{n}", {"name": f"Product {n}"})


def chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    """A generator body: `requests` sends it with chunked transfer encoding."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def init(tenant: Tenant, expected_counts: dict[str, int]) -> dict:
    body = protocol.dumps({"sync_type": "full", "expected_counts": expected_counts})
    answer = tenant.call("POST", protocol.INIT_PATH, body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def finalize(tenant: Tenant, sync_id: str, key: str = "final-1") -> requests.Response:
    body = protocol.dumps({"sync_id": sync_id})
    return tenant.call("POST", protocol.FINALIZE_PATH, body, idempotency_key=key)


def full_sync(tenant: Tenant, data: bytes, expected_counts: dict[str, int]) -> requests.Response:
    started = init(tenant, expected_counts)
    put = requests.put(started["upload_url"], data=data, headers=GZIP, timeout=30)
    assert put.status_code == 200, put.text
    return finalize(tenant, started["sync_id"])


def ids(tenant: Tenant) -> list[str]:
    return [line["external_id"] for line in tenant.entities()]


@pytest.fixture
def tenant(shared_receiver: Receiver) -> Tenant:
    return shared_receiver.pair()


def test_init_hands_out_an_absolute_opaque_upload_url(tenant: Tenant) -> None:
    first, second = init(tenant, {"product": 1}), init(tenant, {"product": 1})
    assert first["upload_url"].startswith(f"{tenant.ingest_url}/upload/")
    assert first["sync_id"] not in first["upload_url"]
    assert first["upload_url"] != second["upload_url"]


def test_a_100k_line_snapshot_lands_and_deletes_what_is_absent(tenant: Tenant) -> None:
    """Streamed (chunked) upload of 100,000 lines; finalize time is printed, not asserted."""
    kept_elsewhere = protocol.upsert_op("page", "shop:page:1", {"title": "About"})
    doomed = [
        protocol.upsert_op("product", f"shop:product:gone-{n}", {"name": "x"}) for n in (1, 2)
    ]
    assert tenant.events("before", [*doomed, kept_elsewhere]).status_code == 200
    data = snapshot(products(range(100_000)))
    started = init(tenant, {"product": 100_000})
    put = requests.put(started["upload_url"], data=chunks(data), headers=GZIP, timeout=60)
    assert put.json() == {"sync_id": started["sync_id"], "bytes": len(data)}

    clock = time.perf_counter()
    answer = finalize(tenant, started["sync_id"])
    print(f"finalize of 100,000 lines took {time.perf_counter() - clock:.2f} s")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "sync_id": started["sync_id"],
        "applied": 100_000,
        "deleted": 2,
        "counts": {"product": 100_000},
        "idempotent_replay": False,
    }
    dumped = tenant.receiver.dump(tenant=tenant.tenant_id)
    assert len(dumped) == 100_001
    assert dumped[0] == {
        "kind": "page",
        "external_id": "shop:page:1",
        "payload": {"title": "About"},
    }
    assert dumped[1] == {
        "kind": "product",
        "external_id": "shop:product:0",
        "payload": {"name": "Product 0"},
    }
    assert not any("gone" in line["external_id"] for line in dumped)
    assert dumped[-1]["external_id"] == "shop:product:99999"  # sorted by kind, then id


def test_a_count_mismatch_applies_nothing(tenant: Tenant) -> None:
    assert tenant.events("before", [protocol.upsert_op("product", "shop:product:9", {"name": "x"})])
    answer = full_sync(tenant, snapshot(products([1, 2])), {"product": 3})
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "count_mismatch")
    assert ids(tenant) == ["shop:product:9"]


def test_an_invalid_line_is_refused_with_its_number(tenant: Tenant) -> None:
    lines = [*products([1, 2]), protocol.snapshot_line("product", "shop:product:3", {"sku": "a"})]
    answer = full_sync(tenant, snapshot(lines), {"product": 3})
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "invalid_payload")
    assert answer.json()["error"]["message"].startswith("line 3:")
    assert ids(tenant) == []


def test_a_finalize_retry_with_the_same_key_replays_and_applies_nothing(tenant: Tenant) -> None:
    started = init(tenant, {"product": 1})
    requests.put(started["upload_url"], data=snapshot(products([1])), headers=GZIP, timeout=30)
    first = finalize(tenant, started["sync_id"], key="k1")
    tenant.events("after", [protocol.delete_op("product", "shop:product:1")])
    again = finalize(tenant, started["sync_id"], key="k1")
    assert again.json() == {**first.json(), "idempotent_replay": True}
    assert ids(tenant) == []


def test_an_upload_url_is_single_use(tenant: Tenant) -> None:
    started = init(tenant, {"product": 1})
    data = snapshot(products([1]))
    assert requests.put(started["upload_url"], data=data, headers=GZIP, timeout=30).ok
    again = requests.put(started["upload_url"], data=data, headers=GZIP, timeout=30)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "upload_used")


def test_an_expired_upload_url_is_gone(make_receiver, tmp_path) -> None:
    receiver = make_receiver(f"sqlite:///{tmp_path / 'r.sqlite'}", ["--upload-ttl", "0"])
    started = init(receiver.pair(), {"product": 1})
    answer = requests.put(
        started["upload_url"], data=snapshot(products([1])), headers=GZIP, timeout=30
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (410, "upload_expired")


def test_an_upload_past_the_limit_is_refused_and_removed(make_receiver, tmp_path) -> None:
    """Chunked, so the receiver only learns the size while streaming it to disk."""
    receiver = make_receiver(f"sqlite:///{tmp_path / 'r.sqlite'}", ["--max-upload-bytes", "100000"])
    started = init(receiver.pair(), {"product": 1})
    too_big = b"\x1f\x8b" + bytes(200_000)
    answer = requests.put(
        started["upload_url"], data=chunks(too_big, 8192), headers=GZIP, timeout=30
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "upload_too_large")
    assert list((receiver.data_dir / "uploads").iterdir()) == []


def test_a_declared_length_past_200_mib_is_refused_before_the_body(tenant: Tenant) -> None:
    """The request announces 200 MiB + 1 and sends nothing: the 413 comes right away."""
    started = init(tenant, {"product": 1})
    target = urlsplit(started["upload_url"])
    request = (
        f"PUT {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
        "Content-Type: application/gzip\r\n"
        f"Content-Length: {protocol.MAX_FULL_BYTES + 1}\r\n\r\n"
    ).encode()
    with socket.create_connection((target.hostname, target.port), timeout=10) as sock:
        sock.sendall(request)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"


def test_finalize_before_upload_is_refused(tenant: Tenant) -> None:
    started = init(tenant, {"product": 1})
    answer = finalize(tenant, started["sync_id"])
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "upload_missing")
