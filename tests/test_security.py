"""Security: the signature decision is constant-time, hostile requests crash nothing and
apply nothing, and the shared secret is in nothing a DAG run leaves behind.

Tampered fields, replays, stale/future timestamps, unknown tenants, oversized bodies and
malformed JSON against the real receiver are in `test_receiver_auth.py`; this file adds
what that one does not cover.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from fastapi.testclient import TestClient

from catalog_sync import protocol
from catalog_sync.receiver import service
from catalog_sync.receiver.store import ReceiverStore, tenants
from dag_support import SyncEnv, make_sync_env
from receiver_harness import Receiver, Tenant

OP = protocol.upsert_op("product", "shop:product:1", {"name": "Kava"})
BODY = protocol.events_body("batch-1", [protocol.dumps(OP)])
#: 32 bytes anyone can spot, in every form the secret could leak in.
KEY = b"RECOGNISABLE-SECRET-0123456789ab"
SECRET_B64 = base64.b64encode(KEY).decode("ascii")
NEEDLES = (KEY, SECRET_B64.encode(), KEY.hex().encode(), b"RECOGNISABLE")


# --- constant-time comparison -----------------------------------------------------------


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, ReceiverStore, Tenant]]:
    """The receiver's ASGI app in this process (so its calls can be observed)."""
    store = ReceiverStore(f"sqlite:///{tmp_path / 'receiver.sqlite'}")
    paired = store.pair(
        store.issue_pair_code("http://127.0.0.1"),
        site_url="",
        provider_id="tests",
        plugin_version="t/1",
        extra={},
    )
    tenant = Tenant(
        None,  # type: ignore[arg-type]  # only used to sign
        paired["tenant_id"],
        paired["shared_secret_b64"],
        "http://127.0.0.1",
    )
    app = service.create_app(store, tmp_path / "data")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, store, tenant
    store.dispose()


@pytest.mark.parametrize("verdict", [True, False])
def test_the_receivers_signature_decision_is_hmac_compare_digest(
    app_client: tuple[TestClient, ReceiverStore, Tenant],
    monkeypatch: pytest.MonkeyPatch,
    verdict: bool,
) -> None:
    """Replace `hmac.compare_digest` (as `protocol` sees it) with a spy that returns a
    fixed verdict: if the receiver's answer follows the spy (a wrong signature accepted,
    a right one refused), the decision is made by `compare_digest` and by nothing else,
    e.g. no `==` on the way. The spy also sees both full signatures, as bytes."""
    client, _store, tenant = app_client
    seen: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return verdict

    monkeypatch.setattr(protocol.hmac, "compare_digest", spy)
    headers = tenant.headers("GET", protocol.STATUS_PATH)
    if verdict:  # a wrong signature, accepted only because the spy says so
        headers[protocol.HEADER_SIGNATURE] = "0" * 64
    answer = client.get(protocol.STATUS_PATH, headers=headers)
    assert answer.status_code == (200 if verdict else 401), answer.text
    [(expected, sent)] = seen
    assert sent == headers[protocol.HEADER_SIGNATURE].encode()
    assert len(expected) == 64


# --- hostile requests -----------------------------------------------------------------------


@dataclasses.dataclass
class Hostile:
    """A request that must be refused with `status`, without a crash."""

    status: int
    change: Callable[[Tenant, dict[str, str]], bytes]


def _headers_only(**fixed: Any) -> Callable[[Tenant, dict[str, str]], bytes]:
    def change(tenant: Tenant, headers: dict[str, str]) -> bytes:
        headers.update(fixed)
        return BODY

    return change


def _signed(body: bytes, **fixed: Any) -> Callable[[Tenant, dict[str, str]], bytes]:
    """A validly signed request with this body (and pinned timestamp or nonce)."""

    def change(tenant: Tenant, headers: dict[str, str]) -> bytes:
        headers.update(tenant.headers("POST", protocol.EVENTS_PATH, body, **fixed))
        return body

    return change


HOSTILE = {
    "non-hex signature": Hostile(401, _headers_only(**{protocol.HEADER_SIGNATURE: "é" * 64})),
    "short signature": Hostile(401, _headers_only(**{protocol.HEADER_SIGNATURE: "ab"})),
    "huge tenant id": Hostile(401, _headers_only(**{protocol.HEADER_TENANT: "t_" + "x" * 8000})),
    "13-digit timestamp": Hostile(401, _signed(BODY, timestamp="9" * 13)),
    "negative timestamp": Hostile(401, _signed(BODY, timestamp="-1")),
    "nonce that is not hex": Hostile(401, _signed(BODY, nonce="z" * 32)),
    "json array body": Hostile(400, _signed(b"[1, 2, 3]")),
    "deeply nested json": Hostile(400, _signed(b"[" * 100_000 + b"]" * 100_000)),
    "not utf-8": Hostile(400, _signed(b'{"batch_id": "\xff\xfe"}')),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_a_hostile_request_is_refused_without_a_crash_and_applies_nothing(
    shared_receiver: Receiver, case: str
) -> None:
    tenant = shared_receiver.pair()
    hostile = HOSTILE[case]
    headers = tenant.headers("POST", protocol.EVENTS_PATH, BODY)
    body = hostile.change(tenant, headers)
    headers[protocol.HEADER_IDEMPOTENCY] = "batch-1"
    answer = requests.post(
        f"{tenant.ingest_url}{protocol.EVENTS_PATH}", data=body, headers=headers, timeout=30
    )
    assert answer.status_code == hostile.status, answer.text
    assert answer.json()["error"]["code"]
    assert tenant.entities() == []
    assert tenant.status().status_code == 200  # still serving


def test_a_forged_request_does_not_burn_the_nonce_it_carries(shared_receiver: Receiver) -> None:
    """The nonce is claimed only after the signature matched: an attacker who sees a
    nonce cannot make the producer's real request with it fail as a replay."""
    tenant = shared_receiver.pair()
    nonce = protocol.new_nonce()
    forged = tenant.headers("GET", protocol.STATUS_PATH, nonce=nonce)
    forged[protocol.HEADER_SIGNATURE] = "0" * 64
    assert tenant.call("GET", protocol.STATUS_PATH, headers=forged).status_code == 401
    real = tenant.headers("GET", protocol.STATUS_PATH, nonce=nonce)
    assert tenant.call("GET", protocol.STATUS_PATH, headers=real).status_code == 200


# --- the secret in everything a run leaves behind ---------------------------------------------


def _with_known_secret(env: SyncEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the paired tenant the recognisable KEY, at the receiver and in Airflow."""
    conn = json.loads(env.vars["AIRFLOW_CONN_VOICEBOT_DEFAULT"])
    with env.receiver.store.engine.begin() as db:
        db.execute(
            sa.update(tenants).where(tenants.c.tenant_id == conn["login"]).values(secret=KEY)
        )
    conn["password"] = SECRET_B64
    env.vars["AIRFLOW_CONN_VOICEBOT_DEFAULT"] = json.dumps(conn)
    monkeypatch.setenv("AIRFLOW_CONN_VOICEBOT_DEFAULT", json.dumps(conn))


def _leaks(text: bytes) -> list[bytes]:
    return [needle for needle in NEEDLES if needle in text]


def _files_with_the_secret(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix == ".gz":
            data += gzip.decompress(data)
        if _leaks(data):
            found.append(str(path))
    return found


def _metadata_rows(run_id: str) -> str:
    """XCom values and the run's conf, read from Airflow's metadata database."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        xcoms = [x.value for x in session.query(XComModel).filter(XComModel.run_id == run_id)]
        confs = [r.conf for r in session.query(DagRun).filter(DagRun.run_id == run_id)]
    return json.dumps([xcoms, confs], default=str)


def _fail_events_with_401(receiver: Receiver) -> None:
    receiver.add_fault(method="POST", path=protocol.EVENTS_PATH, action="status", status=401)


def _fail_finalize_with_500(receiver: Receiver) -> None:
    receiver.add_fault(
        method="POST",
        path=protocol.FINALIZE_PATH,
        action="status",
        status=500,
        retry_after="0",
        times=100,
    )


RUNS = {
    "delta": ("delta", None, "success"),
    "full": ("full", None, "success"),
    "delta-401": ("delta", _fail_events_with_401, "failed"),
    "full-500": ("full", _fail_finalize_with_500, "failed"),
}


@pytest.mark.parametrize("name", list(RUNS), ids=list(RUNS))
def test_the_secret_is_in_nothing_a_run_leaves_behind(
    receiver: Receiver,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    airflow_env: dict[str, str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    mode, fault, outcome = RUNS[name]
    monkeypatch.setenv("CATALOG_SYNC_RETRIES", "0")
    (tmp_path / "world").mkdir()
    env = make_sync_env(receiver, sqlite_url, tmp_path / "world", monkeypatch)
    _with_known_secret(env, monkeypatch)
    if fault is not None:
        fault(receiver)
    run = env.run(mode, {"kinds": ["product"]})
    assert run.state == outcome, env.states(run)
    out, err = capfd.readouterr()
    assert out or err  # the run did log something
    assert _leaks((out + err + caplog.text).encode()) == []
    assert _leaks(_metadata_rows(run.run_id).encode()) == []
    assert _files_with_the_secret(Path(os.environ["AIRFLOW_HOME"])) == []
    assert _files_with_the_secret(tmp_path / "world") == []  # staging, state DB, map
    receiver.stop()  # flushes its log
    assert _leaks(receiver.log_text().encode()) == []
