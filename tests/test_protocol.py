"""Unit tests of `catalog_sync.protocol`: the spec's test vectors and encoding rules."""

from __future__ import annotations

import decimal
import hashlib

import pytest

from catalog_sync import protocol
from catalog_sync.errors import ConfigurationError

SECRET_B64 = "dm9pY2Vib3QtdGVzdC1zaGFyZWQtc2VjcmV0LTAxMjM="
TS = "1700000000"
NONCE = "0123456789abcdef0123456789abcdef"
INIT_BODY = b'{"sync_type":"full","expected_counts":{"product":2}}'


@pytest.fixture
def key() -> bytes:
    return protocol.decode_secret(SECRET_B64)


# --- spec test vectors ---------------------------------------------------------------


def test_init_vector_body_sha256() -> None:
    assert protocol.body_sha256(INIT_BODY) == (
        "979a817440eab3a9845c63a94ee447301e9c5baf677487603b2fd8ca146c61de"
    )


def test_init_vector_signature(key: bytes) -> None:
    signature = protocol.sign(key, "POST", protocol.INIT_PATH, TS, NONCE, INIT_BODY)
    assert signature == "e9c2f7b8d57318d4e6ad64d44aba6838d29d7bacb04cf28501e98b4ea551be17"


def test_status_vector_signature(key: bytes) -> None:
    signature = protocol.sign(key, "GET", protocol.STATUS_PATH, TS, NONCE, b"")
    assert signature == "0781df980e083c3b88b4ca9e8694bd8125a789af3378bebe4b18fdb8a7be455e"


def test_lowercase_method_signs_like_uppercase(key: bytes) -> None:
    lower = protocol.sign(key, "post", protocol.INIT_PATH, TS, NONCE, INIT_BODY)
    upper = protocol.sign(key, "POST", protocol.INIT_PATH, TS, NONCE, INIT_BODY)
    assert lower == upper


def test_canonical_string_has_five_lines_and_no_trailing_newline() -> None:
    canonical = protocol.canonical_string("get", "/p", TS, NONCE, b"")
    assert canonical == f"GET\n/p\n{TS}\n{NONCE}\n{protocol.EMPTY_BODY_SHA256}"
    assert hashlib.sha256(b"").hexdigest() == protocol.EMPTY_BODY_SHA256


def test_signature_matches_accepts_the_right_signature(key: bytes) -> None:
    signature = protocol.sign(key, "POST", protocol.INIT_PATH, TS, NONCE, INIT_BODY)
    assert protocol.signature_matches(
        key, "POST", protocol.INIT_PATH, TS, NONCE, INIT_BODY, signature
    )


def test_signature_matches_rejects_a_changed_body(key: bytes) -> None:
    signature = protocol.sign(key, "POST", protocol.INIT_PATH, TS, NONCE, INIT_BODY)
    assert not protocol.signature_matches(
        key, "POST", protocol.INIT_PATH, TS, NONCE, INIT_BODY + b" ", signature
    )


def test_signed_headers_are_the_seven_plus_content_type_on_post(key: bytes) -> None:
    headers = protocol.signed_headers(
        key=key,
        tenant_id="t1",
        method="POST",
        path=protocol.INIT_PATH,
        body=INIT_BODY,
        plugin_version="x/1",
        timestamp=int(TS),
        nonce=NONCE,
    )
    assert set(headers) == {
        protocol.HEADER_TENANT,
        protocol.HEADER_TIMESTAMP,
        protocol.HEADER_NONCE,
        protocol.HEADER_SIGNATURE,
        protocol.HEADER_PROTOCOL,
        protocol.HEADER_PLUGIN,
        protocol.HEADER_SITE_URL,
        "Content-Type",
    }
    assert headers[protocol.HEADER_SIGNATURE] == (
        "e9c2f7b8d57318d4e6ad64d44aba6838d29d7bacb04cf28501e98b4ea551be17"
    )
    assert headers[protocol.HEADER_SITE_URL] == ""


def test_signed_headers_draw_a_fresh_nonce_each_time(key: bytes) -> None:
    def nonce() -> str:
        return protocol.signed_headers(
            key=key, tenant_id="t", method="GET", path="/", body=b"", plugin_version="x/1"
        )[protocol.HEADER_NONCE]

    first, second = nonce(), nonce()
    assert first != second
    assert protocol.is_valid_nonce(first)


def test_unsigned_headers_carry_only_content_type_and_versions() -> None:
    assert protocol.unsigned_headers("x/1") == {
        "Content-Type": "application/json",
        protocol.HEADER_PROTOCOL: "2",
        protocol.HEADER_PLUGIN: "x/1",
    }


# --- JSON encoding -----------------------------------------------------------------------


def test_dumps_is_compact() -> None:
    assert protocol.dumps({"a": [1, 2], "b": {"c": None}}) == b'{"a":[1,2],"b":{"c":null}}'


def test_dumps_leaves_slash_unescaped() -> None:
    assert protocol.dumps({"url": "https://x/y"}) == b'{"url":"https://x/y"}'


def test_dumps_writes_non_ascii_as_raw_utf8() -> None:
    assert protocol.dumps({"name": "Колір ☕"}) == '{"name":"Колір ☕"}'.encode()


def test_dumps_keeps_insertion_order() -> None:
    assert protocol.dumps({"z": 1, "a": 2, "m": 3}) == b'{"z":1,"a":2,"m":3}'


def test_dumps_refuses_nan() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        protocol.dumps({"price": float("nan")})


def test_dumps_refuses_infinity() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        protocol.dumps({"price": float("inf")})


class _Doc(dict):
    """A dict subclass: walked as a mapping."""


class _Items(list):
    """A list subclass: walked as a sequence."""


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        [None, {"a": [1, "x", (2, float("-inf"))]}],
        {"a": _Doc(b=None, c=float("nan"))},
        {"a": None, "b": _Items([True, float("inf")])},
    ],
)
def test_dumps_finds_a_non_finite_float_anywhere(value: object) -> None:
    with pytest.raises(ValueError, match="a float is NaN or infinite"):
        protocol.dumps(value)


def test_dumps_writes_finite_floats_next_to_nulls() -> None:
    value = {"a": None, "b": _Items([1.5, (None, 2.0)]), "c": _Doc(d=0.25)}
    assert protocol.dumps(value) == b'{"a":null,"b":[1.5,[null,2.0]],"c":{"d":0.25}}'


def test_dumps_writes_decimal_exactly() -> None:
    value = decimal.Decimal("12345678901234567890.123456789")
    assert protocol.dumps({"d": value}) == b'{"d":"12345678901234567890.123456789"}'


def test_dumps_refuses_non_finite_decimal() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        protocol.dumps({"d": decimal.Decimal("NaN")})


def test_events_body_matches_dumps_of_the_whole_body() -> None:
    ops = [
        protocol.upsert_op("product", "laravel:product:1", {"name": "Кава/Coffee"}),
        protocol.delete_op("tag", "laravel:tag:2"),
    ]
    body = protocol.events_body("b-1", [protocol.dumps(op) for op in ops])
    assert body == protocol.dumps({"batch_id": "b-1", "events": ops})


def test_events_body_size_equals_the_real_length() -> None:
    encoded = [protocol.dumps(protocol.delete_op("tag", f"x:tag:{i}")) for i in range(3)]
    size = protocol.events_body_size("b-1", [len(op) for op in encoded])
    assert size == len(protocol.events_body("b-1", encoded))


def test_upsert_op_key_order_and_optional_fields() -> None:
    op = protocol.upsert_op("page", "x:page:1:uk", {"title": "t"}, "uk", "x:page:1")
    assert list(op) == ["type", "entity_kind", "external_id", "payload", "lang", "translation_of"]
    assert list(protocol.upsert_op("page", "x:page:1", {"title": "t"})) == [
        "type",
        "entity_kind",
        "external_id",
        "payload",
    ]


# --- URLs ------------------------------------------------------------------------------------


def test_check_url_accepts_https_and_strips_trailing_slash() -> None:
    assert protocol.check_url("https://ingest.example.com/", "u") == "https://ingest.example.com"


@pytest.mark.parametrize(
    "url", ["http://localhost:8000", "http://127.0.0.1:8765/x", "http://[::1]:8000"]
)
def test_check_url_accepts_http_for_loopback_hosts(url: str) -> None:
    assert protocol.check_url(url, "u") == url


@pytest.mark.parametrize(
    "url", ["http://ingest.example.com", "http://10.0.0.1", "http://127.0.0.2", "http://0.0.0.0"]
)
def test_check_url_refuses_http_to_other_hosts(url: str) -> None:
    with pytest.raises(ConfigurationError, match="use https://"):
        protocol.check_url(url, "base URL")


@pytest.mark.parametrize("url", ["", "ftp://x", "ingest.example.com", "https://"])
def test_check_url_refuses_non_urls(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not an absolute https:// URL"):
        protocol.check_url(url, "base URL")


def test_url_path_drops_host_and_query() -> None:
    assert protocol.url_path("https://h/prefix/api?x=1") == "/prefix/api"


# --- secrets -----------------------------------------------------------------------------------


def test_decode_secret_returns_raw_key_bytes() -> None:
    assert protocol.decode_secret(SECRET_B64) == b"voicebot-test-shared-secret-0123"


@pytest.mark.parametrize(
    "bad",
    [
        "dm9pY2Vib3Q",  # missing padding
        "dm9p Y2Vib3Q=",  # whitespace
        "dm9pY2Vib3Q*",  # not in the alphabet
        "dm9pY2Vib3Q=\n",  # trailing newline
        "ключ",  # not ASCII
    ],
)
def test_decode_secret_refuses_non_strict_base64_without_quoting_it(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="not strict base64") as info:
        protocol.decode_secret(bad)
    assert bad.strip() not in str(info.value)


@pytest.mark.parametrize("empty", ["", "===="])
def test_decode_secret_refuses_empty(empty: str) -> None:
    with pytest.raises(ConfigurationError):
        protocol.decode_secret(empty)
