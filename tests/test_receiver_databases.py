"""The receiver's core flow on every supported target database (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import concurrent.futures
import gzip
import time

import pytest
import requests
import sqlalchemy as sa

from catalog_sync import protocol
from catalog_sync.receiver.store import ReceiverStore, pair_codes


def test_core_flow_lands_the_catalog(make_receiver, database_url: str) -> None:
    """Pair, events (with a replay), a full snapshot with tombstones, dump, status, unpair."""
    receiver = make_receiver(database_url)
    tenant = receiver.pair()
    ops = [
        protocol.upsert_op("product", "shop:product:B", {"name": "Big"}),
        protocol.upsert_op("product", "shop:product:b", {"name": "small b"}),
        protocol.upsert_op("category", "shop:category:1", {"name": "Kava"}),
        protocol.upsert_op("product", "shop:product:gone", {"name": "Gone"}),
    ]
    assert tenant.events("b1", ops).json()["processed"] == 4
    assert tenant.events("b1", ops).json()["idempotent_replay"] is True

    lines = [
        protocol.snapshot_line("product", "shop:product:B", {"name": "Big 2"}),
        protocol.snapshot_line("product", "shop:product:b", {"name": "small b"}),
        protocol.snapshot_line(
            "product", "shop:product:b:uk", {"name": "мала b"}, "uk", "shop:product:b"
        ),
    ]
    data = gzip.compress(b"".join(protocol.dumps(line) + b"\n" for line in lines))
    init_body = protocol.dumps({"sync_type": "full", "expected_counts": {"product": 3}})
    started = tenant.call("POST", protocol.INIT_PATH, init_body).json()
    put = requests.put(
        started["upload_url"], data=data, headers={"Content-Type": "application/gzip"}, timeout=30
    )
    assert put.status_code == 200, put.text
    final_body = protocol.dumps({"sync_id": started["sync_id"]})
    done = tenant.call("POST", protocol.FINALIZE_PATH, final_body, idempotency_key="f1")
    assert done.status_code == 200, done.text
    assert (done.json()["applied"], done.json()["deleted"]) == (3, 1)

    assert receiver.dump(kind="product") == lines  # byte-wise order: "B" < "b" < "b:uk"
    assert [line["kind"] for line in receiver.dump()] == ["category", *["product"] * 3]
    assert tenant.status().json()["entities"] == {"category": 1, "product": 3}

    assert tenant.call("POST", protocol.UNPAIR_PATH).status_code == 200
    assert tenant.status().json()["error"]["code"] == "not_paired"


@pytest.mark.postgres
def test_concurrent_batches_with_one_key_apply_once_on_postgres(
    make_receiver, postgres_url: str
) -> None:
    """PostgreSQL runs these transactions truly in parallel (SQLite serializes them)."""
    tenant = make_receiver(postgres_url).pair()
    ops = [protocol.upsert_op("product", f"shop:product:{n}", {"name": "x"}) for n in range(200)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: tenant.events("same-key", ops), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert sorted(a.json()["idempotent_replay"] for a in answers) == [False] + [True] * 5


@pytest.mark.postgres
def test_concurrent_requests_with_one_nonce_pass_once_on_postgres(
    make_receiver, postgres_url: str
) -> None:
    tenant = make_receiver(postgres_url).pair()
    headers = tenant.headers("GET", protocol.STATUS_PATH)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda _: tenant.call("GET", protocol.STATUS_PATH, headers=headers), range(6))
        )
    assert sorted(a.status_code for a in answers) == [200] + [401] * 5
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 401} == {"nonce_replay"}


def test_stored_times_keep_their_precision(database_url: str) -> None:
    """Epoch seconds survive the round trip (MySQL's FLOAT would round them to ~1e3 s)."""
    store = ReceiverStore(database_url)
    before = time.time()
    code = store.issue_pair_code("http://127.0.0.1:1", ttl=900)
    after = time.time()
    with store.engine.connect() as conn:
        expires = conn.execute(
            sa.select(pair_codes.c.expires_at).where(pair_codes.c.code == code)
        ).scalar_one()
    store.dispose()
    assert before + 900 <= expires <= after + 900
