"""`catalog-sync pair` / `unpair` as real processes, against the real receiver and a
real (migrated, Fernet-keyed) Airflow metadata database.

An Airflow-importing process costs seconds, so each CLI run is shared: module-scoped
fixtures run a scenario once (the independent refusals two at a time) and several
tests assert on its outcome, one behaviour each.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from catalog_sync import protocol
from catalog_sync.connections import find_connection
from catalog_sync.errors import ConfigurationError
from catalog_sync.hooks import VoiceBotHook, lookup_connection
from catalog_sync.pairing import delete_connection, store_connection
from hook_support import ScriptedServer
from receiver_harness import BIN, Receiver

Done = subprocess.CompletedProcess[str]
Cli = Callable[..., Done]
NOT_BASE64 = "bm90IHN0cmljdA"


@pytest.fixture
def receiver(shared_receiver: Receiver) -> Receiver:
    """One receiver per module; each test starts with no faults and an empty request log."""
    return shared_receiver


@pytest.fixture(scope="module")
def cli(airflow_env: dict[str, str]) -> Cli:
    """conftest's `run_cli`, at module scope so that module fixtures can share runs."""

    def run(*args: str, env: dict[str, str] | None = None) -> Done:
        return subprocess.run(
            [str(Path(BIN) / "catalog-sync"), *args],
            env={**airflow_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    return run


def new_conn_id() -> str:
    """A fresh id: the metadata database is shared by the whole test session."""
    return f"vb_cli_{os.urandom(4).hex()}"


def pair(cli: Cli, base_url: str, code: str, conn_id: str, **env: str) -> Done:
    return cli("pair", code, "--base-url", base_url, "--conn-id", conn_id, env=env or None)


def output(done: Done) -> str:
    return done.stdout + done.stderr


def code_still_works(receiver: Receiver, code: str) -> bool:
    """True when `code` was never spent, i.e. the command did not reach the backend."""
    VoiceBotHook.pair(receiver.base_url, code)
    return True


# --- pair: success -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paired(cli: Cli, module_receiver: Receiver) -> Iterator[tuple[str, Done]]:
    """One real `catalog-sync pair` against the receiver: (conn id, completed process)."""
    conn_id = new_conn_id()
    done = pair(cli, module_receiver.base_url, module_receiver.issue_code(), conn_id)
    assert done.returncode == 0, done.stderr
    yield conn_id, done
    delete_connection(conn_id)


def test_pair_stores_the_connection(paired: tuple[str, Done], receiver: Receiver) -> None:
    conn = lookup_connection(paired[0])
    assert (conn.conn_type, conn.host) == ("voicebot", receiver.base_url)
    assert protocol.decode_secret(conn.password)
    assert "password" not in conn.extra_dejson


def test_pair_prints_the_tenant_and_ingest_url(
    paired: tuple[str, Done], receiver: Receiver
) -> None:
    conn_id, done = paired
    assert lookup_connection(conn_id).login in done.stdout
    assert receiver.base_url in done.stdout


def test_pair_prints_no_secret(paired: tuple[str, Done]) -> None:
    conn_id, done = paired
    assert lookup_connection(conn_id).password not in output(done)


def test_the_stored_password_is_encrypted_in_the_metadata_db(paired: tuple[str, Done]) -> None:
    from airflow.configuration import conf
    from cryptography.fernet import Fernet
    from sqlalchemy import create_engine, text

    conn_id = paired[0]
    engine = create_engine(conf.get("database", "sql_alchemy_conn"))
    with engine.connect() as db:
        row = db.execute(
            text("SELECT is_encrypted, password, extra FROM connection WHERE conn_id = :c"),
            {"c": conn_id},
        ).one()
    engine.dispose()
    secret = lookup_connection(conn_id).password
    assert row.is_encrypted
    assert secret not in row.password
    assert secret not in (row.extra or "")
    key = os.environ["AIRFLOW__CORE__FERNET_KEY"].encode()
    assert Fernet(key).decrypt(row.password.encode()).decode() == secret


def test_a_cli_paired_connection_works_from_the_hook(paired: tuple[str, Done]) -> None:
    assert VoiceBotHook(paired[0]).status()["provider_status"] == "connected"


# --- pair: refusals ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refusals(
    cli: Cli, module_receiver: Receiver, paired: tuple[str, Done]
) -> Iterator[dict[str, tuple[str, str, Done]]]:
    """Each refusal scenario run once, two at a time: name -> (conn id, code, process)."""
    base = module_receiver.base_url
    with ScriptedServer() as bad_secret, ScriptedServer() as no_secret:
        bad_secret.answer(
            200, {"tenant_id": "t1", "shared_secret_b64": NOT_BASE64, "ingest_url": base}
        )
        no_secret.answer(200, {"tenant_id": "t1", "ingest_url": base})
        env_id = new_conn_id()
        scenarios: dict[str, tuple[str, str, str, dict[str, str]]] = {
            "already_paired": (paired[0], base, module_receiver.issue_code(), {}),
            "env_var": (
                env_id,
                base,
                module_receiver.issue_code(),
                {f"AIRFLOW_CONN_{env_id.upper()}": "voicebot://t:c2VjcmV0@h"},
            ),
            "no_fernet": (
                new_conn_id(),
                base,
                module_receiver.issue_code(),
                {"AIRFLOW__CORE__FERNET_KEY": ""},
            ),
            "remote_http": (new_conn_id(), "http://ingest.example.com", "VB-AAAA-BBBB", {}),
            "bad_secret": (new_conn_id(), bad_secret.base_url, "VB-AAAA-BBBB", {}),
            "no_secret": (new_conn_id(), no_secret.base_url, "VB-AAAA-BBBB", {}),
        }
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                name: pool.submit(pair, cli, url, code, conn_id, **env)
                for name, (conn_id, url, code, env) in scenarios.items()
            }
            yield {
                name: (scenarios[name][0], scenarios[name][2], future.result())
                for name, future in futures.items()
            }


def test_pair_refuses_an_already_paired_conn_id(refusals: dict, receiver: Receiver) -> None:
    conn_id, code, done = refusals["already_paired"]
    assert done.returncode == 2
    assert f"catalog-sync unpair --conn-id {conn_id}" in done.stderr
    assert code_still_works(receiver, code)


def test_pair_refuses_a_conn_id_defined_by_an_env_var(refusals: dict, receiver: Receiver) -> None:
    conn_id, code, done = refusals["env_var"]
    assert done.returncode == 2
    assert f"AIRFLOW_CONN_{conn_id.upper()}" in done.stderr
    assert code_still_works(receiver, code)


def test_pair_without_a_fernet_key_refuses_before_calling_the_backend(
    refusals: dict, receiver: Receiver
) -> None:
    conn_id, code, done = refusals["no_fernet"]
    assert done.returncode == 2
    assert "AIRFLOW__CORE__FERNET_KEY" in done.stderr
    assert code_still_works(receiver, code)
    assert find_connection(conn_id) is None


def test_pair_refuses_plain_http_to_a_remote_host(refusals: dict) -> None:
    _, _, done = refusals["remote_http"]
    assert done.returncode == 2
    assert "use https://" in done.stderr


def test_pair_refuses_a_secret_that_is_not_strict_base64(refusals: dict) -> None:
    conn_id, _, done = refusals["bad_secret"]
    assert done.returncode == 2
    assert "shared_secret_b64" in done.stderr
    assert NOT_BASE64 not in output(done)
    assert find_connection(conn_id) is None


def test_pair_answer_without_a_field_exits_2(refusals: dict) -> None:
    conn_id, _, done = refusals["no_secret"]
    assert done.returncode == 2
    assert "lacks 'shared_secret_b64'" in done.stderr
    assert find_connection(conn_id) is None


def test_pair_answered_500_is_sent_3_times_then_exits_1(cli: Cli, receiver: Receiver) -> None:
    conn_id = new_conn_id()
    receiver.add_fault(method="POST", path=protocol.PAIR_PATH, action="status", status=500, times=3)
    done = pair(cli, receiver.base_url, receiver.issue_code(), conn_id)
    assert done.returncode == 1
    assert "after 3 attempts" in done.stderr
    sent = [r["status"] for r in receiver.requests() if r["path"] == protocol.PAIR_PATH]
    assert sent == [500, 500, 500]
    assert find_connection(conn_id) is None


# --- unpair -----------------------------------------------------------------------------------


def store_paired(receiver: Receiver, ingest_url: str | None = None) -> str:
    """Pair in-process (no CLI run) and store the connection; returns its id."""
    from dataclasses import replace

    pairing = VoiceBotHook.pair(receiver.base_url, receiver.issue_code())
    if ingest_url:
        pairing = replace(pairing, ingest_url=ingest_url)
    conn_id = new_conn_id()
    store_connection(conn_id, pairing, "")
    return conn_id


@pytest.fixture(scope="module")
def unpaired(cli: Cli, module_receiver: Receiver) -> tuple[str, object, str, Done]:
    """One real `catalog-sync unpair`: (conn id, the old connection, its secret, process)."""
    conn_id = store_paired(module_receiver)
    conn = lookup_connection(conn_id)
    return conn_id, conn, conn.password, cli("unpair", "--conn-id", conn_id)


def test_unpair_exits_0_and_deletes_the_connection(unpaired: tuple) -> None:
    conn_id, _, _, done = unpaired
    assert done.returncode == 0, done.stderr
    assert conn_id in done.stdout
    assert find_connection(conn_id) is None


def test_unpair_disconnects_on_the_backend(unpaired: tuple) -> None:
    conn_id, conn, _, _ = unpaired
    with pytest.raises(ConfigurationError, match="not_paired"):
        VoiceBotHook(conn_id, connection=conn).status()


def test_unpair_prints_no_secret(unpaired: tuple) -> None:
    _, _, secret, done = unpaired
    assert secret not in output(done)


def test_unpair_answered_500_exits_1_and_still_deletes(cli: Cli, receiver: Receiver) -> None:
    conn_id = store_paired(receiver)
    secret = lookup_connection(conn_id).password
    receiver.add_fault(
        method="POST", path=protocol.UNPAIR_PATH, action="status", status=500, times=3
    )
    done = cli("unpair", "--conn-id", conn_id)
    assert done.returncode == 1
    assert "deleted anyway" in done.stderr
    assert find_connection(conn_id) is None
    assert secret not in output(done)


def test_unpair_with_the_receiver_down_exits_1_and_still_deletes(
    cli: Cli, receiver: Receiver
) -> None:
    """ "Down": the stored ingest URL is a loopback port nobody listens on."""
    with ScriptedServer() as gone:
        closed_url = gone.base_url
    conn_id = store_paired(receiver, ingest_url=closed_url)
    done = cli("unpair", "--conn-id", conn_id)
    assert done.returncode == 1
    assert "ConnectionError" in done.stderr
    assert find_connection(conn_id) is None


def test_unpair_with_nothing_paired_exits_2(cli: Cli) -> None:
    conn_id = new_conn_id()
    done = cli("unpair", "--conn-id", conn_id)
    assert done.returncode == 2
    assert f"nothing is paired under connection id {conn_id!r}" in done.stderr


def test_unpair_leaves_a_non_voicebot_connection_alone(cli: Cli, airflow_env: dict) -> None:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    conn_id = new_conn_id()
    with create_session() as session:
        session.add(Connection(conn_id=conn_id, conn_type="http", host="https://x.example.com"))
    try:
        done = cli("unpair", "--conn-id", conn_id)
        assert done.returncode == 2
        assert find_connection(conn_id) is not None
    finally:
        delete_connection(conn_id)
