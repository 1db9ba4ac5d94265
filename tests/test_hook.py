"""Unit tests of VoiceBotHook: connection handling, retry maths and the exact wire bytes.

Requests go to a scripted HTTP server on loopback (`hook_support.ScriptedServer`),
which records them as they arrived and can give answers the real receiver never gives
(a pairing reply without a secret, a redirect). Tests against the real receiver are in
test_hook_receiver.py.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.sdk import Connection

from catalog_sync import PLUGIN_VERSION, protocol
from catalog_sync.errors import ConfigurationError, ProtocolError
from catalog_sync.hooks import Pairing, RetryPolicy, VoiceBotHook
from hook_support import Recorded, ScriptedServer

SITE_URL = "https://shop.example.com"
TENANT = "tenant-1"


@pytest.fixture
def secret() -> str:
    return base64.b64encode(os.urandom(24)).decode()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


def voicebot_connection(
    host: str | None,
    secret: str | None,
    *,
    conn_type: str = "voicebot",
    login: str | None = TENANT,
    extra: dict | None = None,
) -> Connection:
    return Connection(
        conn_id="vb_unit",
        conn_type=conn_type,
        host=host,
        login=login,
        password=secret,
        extra=json.dumps({"site_url": SITE_URL} if extra is None else extra),
    )


def hook_for(host: str, secret: str, **kwargs: object) -> VoiceBotHook:
    return VoiceBotHook(
        "vb_unit",
        connection=voicebot_connection(host, secret),
        max_attempts=2,
        backoff_base=0.01,
        **kwargs,
    )


def signature_is_valid(recorded: Recorded, secret: str) -> bool:
    headers = recorded.headers
    return protocol.signature_matches(
        protocol.decode_secret(secret),
        recorded.method,
        recorded.path,
        headers[protocol.HEADER_TIMESTAMP],
        headers[protocol.HEADER_NONCE],
        recorded.body,
        headers[protocol.HEADER_SIGNATURE],
    )


# --- Pairing result and retry policy ------------------------------------------------------


def test_pairing_repr_hides_the_secret(secret: str) -> None:
    pairing = Pairing(tenant_id=TENANT, shared_secret_b64=secret, ingest_url="https://x")
    assert secret not in repr(pairing)
    assert secret not in str(pairing)


def test_backoff_doubles_per_attempt_then_caps() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=5.0)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (5, 5.0)]:
        assert base <= policy.delay(attempt) <= base * 1.1


def test_numeric_retry_after_replaces_backoff() -> None:
    assert RetryPolicy(backoff_base=50.0).delay(1, "7") == 7.0


def test_retry_after_is_capped() -> None:
    assert RetryPolicy(retry_after_cap=3.0).delay(1, "100") == 3.0


def test_http_date_retry_after_falls_back_to_backoff() -> None:
    delay = RetryPolicy(backoff_base=2.0).delay(1, "Wed, 21 Oct 2015 07:28:00 GMT")
    assert 2.0 <= delay <= 2.2


def test_zero_attempts_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="max_attempts"):
        VoiceBotHook("x", max_attempts=0)


# --- pair (unsigned) -----------------------------------------------------------------------


def pair_answer(server: ScriptedServer, secret: str, **overrides: object) -> dict:
    answer = {"tenant_id": TENANT, "shared_secret_b64": secret, "ingest_url": server.base_url}
    answer.update(overrides)
    return {k: v for k, v in answer.items() if v is not None}


def test_pair_returns_the_credentials(server: ScriptedServer, secret: str) -> None:
    server.answer(200, pair_answer(server, secret, protocol_version="2"))
    pairing = VoiceBotHook.pair(server.base_url, "VB-AAAA-BBBB", SITE_URL)
    assert pairing == Pairing(TENANT, secret, server.base_url)


def test_pair_request_is_unsigned_with_the_spec_headers(
    server: ScriptedServer, secret: str
) -> None:
    server.answer(200, pair_answer(server, secret))
    VoiceBotHook.pair(server.base_url, "VB-AAAA-BBBB", SITE_URL)
    [sent] = server.requests
    assert (sent.method, sent.path) == ("POST", protocol.PAIR_PATH)
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers[protocol.HEADER_PROTOCOL] == "2"
    assert sent.headers[protocol.HEADER_PLUGIN] == PLUGIN_VERSION
    voicebot = sorted(name for name in sent.headers if name.lower().startswith("x-voicebot-"))
    assert voicebot == sorted([protocol.HEADER_PROTOCOL, protocol.HEADER_PLUGIN])


def test_pair_body_has_the_spec_keys_in_order(server: ScriptedServer, secret: str) -> None:
    server.answer(200, pair_answer(server, secret))
    VoiceBotHook.pair(server.base_url, "VB-AAAA-BBBB", SITE_URL)
    body = json.loads(server.requests[0].body)
    assert list(body) == ["pair_code", "site_url", "provider_id", "plugin_version"]
    assert body["pair_code"] == "VB-AAAA-BBBB"
    assert body["site_url"] == SITE_URL
    assert body["plugin_version"] == PLUGIN_VERSION


@pytest.mark.parametrize("missing", ["tenant_id", "shared_secret_b64", "ingest_url"])
def test_pair_answer_without_a_field_names_it(
    server: ScriptedServer, secret: str, missing: str
) -> None:
    server.answer(200, pair_answer(server, secret, **{missing: None}))
    with pytest.raises(ProtocolError, match=missing) as info:
        VoiceBotHook.pair(server.base_url, "VB-AAAA-BBBB")
    assert secret not in str(info.value)


@pytest.mark.parametrize("bad_secret", ["bm90IHBhZGRlZA", "c2VjcmV0\n", "c2Vj cmV0", ""])
def test_pair_refuses_a_secret_that_is_not_strict_base64(
    server: ScriptedServer, secret: str, bad_secret: str
) -> None:
    server.answer(200, pair_answer(server, secret, shared_secret_b64=bad_secret))
    with pytest.raises(ProtocolError, match="shared_secret_b64") as info:
        VoiceBotHook.pair(server.base_url, "VB-AAAA-BBBB")
    if bad_secret.strip():
        assert bad_secret.strip() not in str(info.value)


def test_pair_refuses_an_http_ingest_url_to_a_remote_host(
    server: ScriptedServer, secret: str
) -> None:
    server.answer(200, pair_answer(server, secret, ingest_url="http://ingest.example.com"))
    with pytest.raises(ConfigurationError, match="plain http://"):
        VoiceBotHook.pair(server.base_url, "VB-AAAA-BBBB")


def test_pair_refuses_an_http_base_url_to_a_remote_host() -> None:
    with pytest.raises(ConfigurationError, match="plain http://"):
        VoiceBotHook.pair("http://ingest.example.com", "VB-AAAA-BBBB")


def test_pair_does_not_follow_redirects(server: ScriptedServer) -> None:
    server.answer(307, {}, Location="https://elsewhere.example.com/api/v1/ingest/pair")
    with pytest.raises(ConfigurationError, match="HTTP 307"):
        VoiceBotHook.pair(server.base_url, "VB-AAAA-BBBB")
    assert len(server.requests) == 1


# --- signed calls -----------------------------------------------------------------------------


def test_signed_path_includes_the_ingest_url_prefix(server: ScriptedServer, secret: str) -> None:
    VoiceBotHook(
        "vb_unit", connection=voicebot_connection(f"{server.base_url}/gw/t1/", secret)
    ).status()
    [sent] = server.requests
    assert sent.path == "/gw/t1" + protocol.STATUS_PATH
    assert signature_is_valid(sent, secret)


def test_signed_request_carries_the_seven_headers(server: ScriptedServer, secret: str) -> None:
    hook_for(server.base_url, secret).status()
    headers = server.requests[0].headers
    assert headers[protocol.HEADER_TENANT] == TENANT
    assert headers[protocol.HEADER_TIMESTAMP].isdigit()
    assert protocol.is_valid_nonce(headers[protocol.HEADER_NONCE])
    assert headers[protocol.HEADER_PROTOCOL] == "2"
    assert headers[protocol.HEADER_PLUGIN] == PLUGIN_VERSION
    assert headers[protocol.HEADER_SITE_URL] == SITE_URL
    assert signature_is_valid(server.requests[0], secret)


def test_status_is_a_get_without_body(server: ScriptedServer, secret: str) -> None:
    server.answer(200, {"provider_status": "connected"})
    assert hook_for(server.base_url, secret).status() == {"provider_status": "connected"}
    [sent] = server.requests
    assert (sent.method, sent.path, sent.body) == ("GET", protocol.STATUS_PATH, b"")


def test_unpair_sends_a_zero_byte_body(server: ScriptedServer, secret: str) -> None:
    hook_for(server.base_url, secret).unpair()
    [sent] = server.requests
    assert (sent.method, sent.path) == ("POST", protocol.UNPAIR_PATH)
    assert sent.body == b""
    assert sent.headers["Content-Length"] == "0"
    assert signature_is_valid(sent, secret)


def test_events_send_the_exact_body_keyed_by_batch_id(server: ScriptedServer, secret: str) -> None:
    ops = [protocol.upsert_op("product", "laravel:product:1", {"name": "Кава/Coffee"})]
    hook_for(server.base_url, secret).send_events("batch-7", ops)
    [sent] = server.requests
    assert sent.body == protocol.dumps({"batch_id": "batch-7", "events": ops})
    assert sent.headers[protocol.HEADER_IDEMPOTENCY] == "batch-7"
    assert signature_is_valid(sent, secret)


def test_finalize_is_keyed_by_the_sync_id(server: ScriptedServer, secret: str) -> None:
    hook_for(server.base_url, secret).finalize("sync-9")
    [sent] = server.requests
    assert sent.body == b'{"sync_id":"sync-9"}'
    assert sent.headers[protocol.HEADER_IDEMPOTENCY] == "sync-9"


def test_init_sends_counts_and_site_url(server: ScriptedServer, secret: str) -> None:
    server.answer(200, {"sync_id": "s1", "upload_url": f"{server.base_url}/upload/tok"})
    answer = hook_for(server.base_url, secret).init({"product": 2, "category": 1})
    assert answer["sync_id"] == "s1"
    assert server.requests[0].body == protocol.dumps(
        {
            "sync_type": "full",
            "expected_counts": {"product": 2, "category": 1},
            "site_url": SITE_URL,
        }
    )


def test_init_refuses_an_http_upload_url_to_a_remote_host(
    server: ScriptedServer, secret: str
) -> None:
    server.answer(200, {"sync_id": "s1", "upload_url": "http://storage.example.com/put/1"})
    with pytest.raises(ConfigurationError, match="upload URL"):
        hook_for(server.base_url, secret).init({"product": 1})


@pytest.mark.parametrize("counts", [{}, {"product": 0}, {"widget": 1}, {"product": 1.5}])
def test_init_refuses_bad_expected_counts_before_sending(
    server: ScriptedServer, secret: str, counts: dict
) -> None:
    with pytest.raises(ProtocolError):
        hook_for(server.base_url, secret).init(counts)
    assert server.requests == []


def test_send_events_refuses_more_than_500_ops(server: ScriptedServer, secret: str) -> None:
    ops = [protocol.delete_op("tag", f"x:tag:{i}") for i in range(protocol.MAX_BATCH_EVENTS + 1)]
    with pytest.raises(ProtocolError, match="split it"):
        hook_for(server.base_url, secret).send_events("b", ops)
    assert server.requests == []


def test_post_events_refuses_a_body_over_5_mib(server: ScriptedServer, secret: str) -> None:
    body = b"x" * (protocol.MAX_BATCH_BYTES + 1)
    with pytest.raises(ProtocolError, match="split it"):
        hook_for(server.base_url, secret).post_events("b", body)
    assert server.requests == []


def test_error_answer_echoing_the_secret_is_redacted(server: ScriptedServer, secret: str) -> None:
    server.answer(400, {"error": {"code": "bad_request", "message": f"got {secret}"}})
    with pytest.raises(ConfigurationError, match="bad_request") as info:
        hook_for(server.base_url, secret).status()
    assert secret not in str(info.value)


# --- upload -----------------------------------------------------------------------------------


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    path = tmp_path / "snapshot.ndjson.gz"
    lines = b"".join(
        protocol.dumps(protocol.snapshot_line("tag", f"x:tag:{i}", {"name": f"t{i}"})) + b"\n"
        for i in range(2000)
    )
    path.write_bytes(gzip.compress(lines, compresslevel=1))
    return path


def test_upload_sends_the_gzip_bytes_verbatim(
    server: ScriptedServer, secret: str, snapshot: Path
) -> None:
    size = snapshot.stat().st_size
    hook_for(server.base_url, secret).upload(f"{server.base_url}/upload/t", str(snapshot), size)
    [sent] = server.requests
    assert (sent.method, sent.path) == ("PUT", "/upload/t")
    assert sent.body == snapshot.read_bytes()


def test_upload_carries_only_content_type_and_length(
    server: ScriptedServer, secret: str, snapshot: Path
) -> None:
    size = snapshot.stat().st_size
    hook_for(server.base_url, secret).upload(f"{server.base_url}/upload/t", str(snapshot), size)
    headers = {name.lower(): value for name, value in server.requests[0].headers.items()}
    assert headers["content-type"] == "application/gzip"
    assert headers["content-length"] == str(size)
    assert not [name for name in headers if name.startswith("x-voicebot-")]
    assert "authorization" not in headers
    assert "transfer-encoding" not in headers


def test_upload_without_size_sends_the_file_size(
    server: ScriptedServer, secret: str, snapshot: Path
) -> None:
    hook_for(server.base_url, secret).upload(f"{server.base_url}/u", snapshot.as_uri())
    assert server.requests[0].headers["Content-Length"] == str(snapshot.stat().st_size)
    assert server.requests[0].body == snapshot.read_bytes()


def test_upload_retry_resends_the_whole_file(
    server: ScriptedServer, secret: str, snapshot: Path
) -> None:
    server.answer(503, {"error": {"code": "busy", "message": "later"}})
    hook_for(server.base_url, secret).upload(f"{server.base_url}/u", str(snapshot))
    assert [r.body for r in server.requests] == [snapshot.read_bytes()] * 2


def test_upload_refuses_a_source_shorter_than_the_size(
    server: ScriptedServer, secret: str, snapshot: Path
) -> None:
    size = snapshot.stat().st_size + 10
    with pytest.raises(ConfigurationError, match="before the size given"):
        hook_for(server.base_url, secret).upload(f"{server.base_url}/u", str(snapshot), size)


def test_upload_refuses_a_source_longer_than_the_size(
    server: ScriptedServer, secret: str, snapshot: Path
) -> None:
    size = snapshot.stat().st_size - 10
    with pytest.raises(ConfigurationError, match="larger than the size given"):
        hook_for(server.base_url, secret).upload(f"{server.base_url}/u", str(snapshot), size)


def test_upload_refuses_http_to_a_remote_host(secret: str, snapshot: Path) -> None:
    hook = hook_for("http://127.0.0.1:9", secret)
    with pytest.raises(ConfigurationError, match="plain http://"):
        hook.upload("http://storage.example.com/put/1", str(snapshot))


def test_upload_of_a_missing_file_is_a_configuration_error(
    server: ScriptedServer, secret: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        hook_for(server.base_url, secret).upload(f"{server.base_url}/u", str(tmp_path / "no.gz"))
    assert server.requests == []


# --- the Airflow connection -------------------------------------------------------------------


def test_wrong_conn_type_says_how_to_pair(secret: str) -> None:
    conn = voicebot_connection("https://ingest.example.com", secret, conn_type="http")
    with pytest.raises(ConfigurationError, match=r"not 'voicebot'.*catalog-sync pair"):
        _ = VoiceBotHook("vb_unit", connection=conn).settings


@pytest.mark.parametrize(
    ("field", "label"),
    [("host", "ingest URL"), ("login", "tenant id"), ("password", "shared secret")],
)
def test_a_missing_connection_field_is_named(secret: str, field: str, label: str) -> None:
    values = {"host": "https://ingest.example.com", "secret": secret, "login": TENANT}
    values["secret" if field == "password" else field] = None
    conn = voicebot_connection(values["host"], values["secret"], login=values["login"])
    with pytest.raises(ConfigurationError, match=f"no {field} \\(the {label}"):
        _ = VoiceBotHook("vb_unit", connection=conn).settings


def test_a_bad_secret_in_the_connection_is_not_quoted() -> None:
    bad = "not-base64-secret!"
    conn = voicebot_connection("https://ingest.example.com", bad)
    with pytest.raises(ConfigurationError, match="not strict base64") as info:
        _ = VoiceBotHook("vb_unit", connection=conn).settings
    assert bad not in str(info.value)


def test_a_secret_in_extra_is_refused(secret: str) -> None:
    conn = voicebot_connection(
        "https://ingest.example.com", secret, extra={"shared_secret_b64": secret}
    )
    with pytest.raises(ConfigurationError, match="password field only") as info:
        _ = VoiceBotHook("vb_unit", connection=conn).settings
    assert secret not in str(info.value)


def test_an_http_ingest_url_to_a_remote_host_is_refused(secret: str) -> None:
    conn = voicebot_connection("http://ingest.example.com", secret)
    with pytest.raises(ConfigurationError, match="plain http://"):
        _ = VoiceBotHook("vb_unit", connection=conn).settings


def test_connection_is_read_from_an_airflow_conn_env_var(
    secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = voicebot_connection("https://ingest.example.com/p", secret)
    monkeypatch.setenv("AIRFLOW_CONN_VB_FROM_ENV", conn.as_json())
    settings = VoiceBotHook("vb_from_env").settings
    assert (settings.tenant_id, settings.ingest_url) == (TENANT, "https://ingest.example.com/p")


def test_connection_is_read_from_the_metadata_db(secret: str, airflow_env: dict[str, str]) -> None:
    from catalog_sync import pairing

    conn_id = f"vb_db_{os.urandom(4).hex()}"
    pairing.store_connection(
        conn_id, Pairing(TENANT, secret, "https://ingest.example.com"), SITE_URL
    )
    try:
        settings = VoiceBotHook(conn_id).settings
    finally:
        pairing.delete_connection(conn_id)
    assert (settings.tenant_id, settings.site_url) == (TENANT, SITE_URL)
    assert settings.key == base64.b64decode(secret)


def test_a_missing_connection_says_how_to_pair(airflow_env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match=r"no Airflow connection 'vb_nowhere'.*pair"):
        _ = VoiceBotHook("vb_nowhere").settings


def test_the_secret_is_registered_with_airflows_masker(secret: str) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    _ = hook_for("https://ingest.example.com", secret).settings
    assert secret not in str(redact(f"header value {secret}"))


def test_hook_and_settings_reprs_hide_the_secret(secret: str) -> None:
    hook = hook_for("https://ingest.example.com", secret)
    assert secret not in repr(hook.settings)
    assert secret not in repr(hook)
