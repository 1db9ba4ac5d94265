"""The signed-ingest protocol v2: one implementation for the producer and the receiver.

Both sides import these functions, so a signature the hook computes and the one the
reference receiver checks can never drift apart. See docs/protocol.md.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import hashlib
import hmac
import ipaddress
import math
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from catalog_sync.errors import ConfigurationError

PROTOCOL_VERSION = "2"

PAIR_PATH = "/api/v1/ingest/pair"
INIT_PATH = "/api/v1/ingest/init"
FINALIZE_PATH = "/api/v1/ingest/finalize"
EVENTS_PATH = "/api/v1/ingest/events"
STATUS_PATH = "/api/v1/ingest/status"
UNPAIR_PATH = "/api/v1/ingest/unpair"

HEADER_TENANT = "X-VoiceBot-Tenant-Id"
HEADER_TIMESTAMP = "X-VoiceBot-Timestamp"
HEADER_NONCE = "X-VoiceBot-Nonce"
HEADER_SIGNATURE = "X-VoiceBot-Signature"
HEADER_PROTOCOL = "X-VoiceBot-Protocol-Version"
HEADER_PLUGIN = "X-VoiceBot-Plugin-Version"
HEADER_SITE_URL = "X-VoiceBot-Site-Url"
HEADER_IDEMPOTENCY = "Idempotency-Key"

MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_FULL_BYTES = 209_715_200
TIMESTAMP_TOLERANCE_S = 300
NONCE_WINDOW_S = 600

EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

KINDS: tuple[str, ...] = (
    "product",
    "variation",
    "category",
    "tag",
    "attribute",
    "page",
    "post",
    "cpt",
    "menu",
    "menu_item",
    "site",
    "environment",
    "host_profile",
    "shipping_method",
    "payment_method",
)

REQUIRED_PAYLOAD_KEYS: dict[str, tuple[str, ...]] = {
    "product": ("name",),
    "category": ("name",),
    "tag": ("name",),
    "attribute": ("name",),
    "menu": ("name",),
    "page": ("title",),
    "post": ("title",),
    "cpt": ("title",),
    "menu_item": ("label", "menu_external_id"),
    "variation": ("parent_external_id",),
    "shipping_method": ("label",),
    "payment_method": ("label",),
}

EXTERNAL_ID_RE = re.compile(r"^([a-z0-9]+):([a-z_]+):(.+)$", re.IGNORECASE | re.DOTALL)
HOST_PROFILE_EXTERNAL_ID = "host"
_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


# --- JSON encoding -------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """Encode the few non-JSON types a SQL row can hold, exactly and never as a float."""
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise TypeError(f"non-finite decimal {value!r} cannot be encoded")
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """Encode as the spec demands: compact, `/` unescaped, raw UTF-8, insertion order.

    Non-finite floats are refused rather than written as `null`: a silently changed
    value is worse than a clear error.
    """
    try:
        data = orjson.dumps(value, default=_json_default)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"cannot encode as JSON: {exc}") from exc
    # orjson writes NaN and Infinity as `null`: look for them only when a null was written.
    if b"null" in data and _has_non_finite_float(value):
        raise ValueError("cannot encode as JSON: a float is NaN or infinite")
    return data


#: Types that hold no float: the walk below skips them at once.
_NO_FLOAT = frozenset({str, int, bool, type(None)})


def _has_non_finite_float(value: Any) -> bool:
    """Is a NaN or infinity anywhere in `value`? Iterative, exact type checks first.

    It runs for most lines of a snapshot (a `null` is common), so plain dicts, lists and
    scalars are dispatched on their exact type; other mappings and sequences still count.
    Only children that may hold a float are stacked: most are text, numbers or null.
    """
    stack = [value]
    pop, push = stack.pop, stack.append
    no_float = _NO_FLOAT
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            children: Any = item.values()
        elif kind is list or kind is tuple:
            children = item
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
            continue
        elif isinstance(item, Mapping):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        for child in children:
            if type(child) not in no_float:
                push(child)
    return False


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


# --- signing ---------------------------------------------------------------------------


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_string(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """`METHOD\\npath\\ntimestamp\\nnonce\\nbody_sha256`, no trailing newline (spec 4)."""
    return "\n".join((method.upper(), path, timestamp, nonce, body_sha256(body)))


def decode_secret(secret_b64: str) -> bytes:
    """Strictly decode a shared secret; anything but clean, non-empty base64 is refused.

    The error never quotes the secret itself.
    """
    if not isinstance(secret_b64, str) or not secret_b64:
        raise ConfigurationError("the shared secret is empty; pair again")
    try:
        key = base64.b64decode(secret_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ConfigurationError(
            "the shared secret is not strict base64; pair again to get a valid one"
        ) from None
    if not key:
        raise ConfigurationError("the shared secret decodes to zero bytes; pair again")
    return key


def sign(key: bytes, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of the canonical string."""
    message = canonical_string(method, path, timestamp, nonce, body).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signature_matches(
    key: bytes, method: str, path: str, timestamp: str, nonce: str, body: bytes, signature: str
) -> bool:
    """Compare in constant time, so timing reveals nothing about the expected value."""
    expected = sign(key, method, path, timestamp, nonce, body)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace"))


def new_nonce() -> str:
    return secrets.token_hex(16)


def is_valid_nonce(nonce: str) -> bool:
    return bool(_NONCE_RE.match(nonce))


def signed_headers(
    *,
    key: bytes,
    tenant_id: str,
    method: str,
    path: str,
    body: bytes,
    plugin_version: str,
    site_url: str = "",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The seven signed headers (spec 3), plus Content-Type on POST.

    A fresh nonce and timestamp are drawn unless given: a retry is a new request.
    """
    ts = str(int(dt.datetime.now(dt.UTC).timestamp()) if timestamp is None else timestamp)
    nonce = nonce or new_nonce()
    headers = {
        HEADER_TENANT: tenant_id,
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(key, method, path, ts, nonce, body),
        HEADER_PROTOCOL: PROTOCOL_VERSION,
        HEADER_PLUGIN: plugin_version,
        HEADER_SITE_URL: site_url,
    }
    if method.upper() == "POST":
        headers["Content-Type"] = "application/json"
    return headers


def unsigned_headers(plugin_version: str) -> dict[str, str]:
    """Headers of the unsigned pair call: content type and the two versions only."""
    return {
        "Content-Type": "application/json",
        HEADER_PROTOCOL: PROTOCOL_VERSION,
        HEADER_PLUGIN: plugin_version,
    }


# --- URLs --------------------------------------------------------------------------------


def _is_local_host(host: str) -> bool:
    if host in _LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address("::1")
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """Return `url` without a trailing `/`, or refuse it as spec 1 says.

    `https://` always; `http://` only for localhost, 127.0.0.1 and ::1.
    """
    parts = urlsplit(url or "")
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ConfigurationError(
            f"the {what} {url!r} is not an absolute https:// URL; "
            "give one like https://ingest.example.com"
        )
    if parts.scheme == "http" and not _is_local_host(parts.hostname):
        raise ConfigurationError(
            f"the {what} {url!r} uses plain http:// to a non-local host; "
            "use https:// (http:// is allowed only for localhost, 127.0.0.1 and ::1)"
        )
    return url.rstrip("/")


def url_path(url: str) -> str:
    """The path part that is signed: no scheme, host or query."""
    return urlsplit(url).path or "/"


# --- entities ---------------------------------------------------------------------------


def upsert_op(
    kind: str,
    external_id: str,
    payload: Mapping[str, Any],
    lang: str | None = None,
    translation_of: str | None = None,
) -> dict[str, Any]:
    """An upsert op with keys in the order of spec 6; `lang`/`translation_of` only when set."""
    op: dict[str, Any] = {
        "type": "upsert",
        "entity_kind": kind,
        "external_id": external_id,
        "payload": payload,
    }
    if lang:
        op["lang"] = lang
    if translation_of:
        op["translation_of"] = translation_of
    return op


def delete_op(kind: str, external_id: str) -> dict[str, Any]:
    return {"type": "delete", "entity_kind": kind, "external_id": external_id}


def snapshot_line(
    kind: str,
    external_id: str,
    payload: Mapping[str, Any],
    lang: str | None = None,
    translation_of: str | None = None,
) -> dict[str, Any]:
    """One snapshot NDJSON record in the key order of spec 7."""
    line: dict[str, Any] = {"kind": kind, "external_id": external_id, "payload": payload}
    if lang:
        line["lang"] = lang
    if translation_of:
        line["translation_of"] = translation_of
    return line


def external_id_problem(kind: str, external_id: Any) -> str | None:
    """Why an external id is unacceptable for `kind`, or None when it is fine."""
    if not isinstance(external_id, str) or not external_id:
        return "external_id must be a non-empty string"
    if kind == "host_profile":
        return None
    if not EXTERNAL_ID_RE.match(external_id):
        return (
            f"external_id {external_id!r} does not match {{producer}}:{{kind}}:{{id}} "
            "(^([a-z0-9]+):([a-z_]+):(.+)$)"
        )
    return None


def payload_problem(kind: str, payload: Any) -> str | None:
    """Why a payload is unacceptable for `kind` (spec 8 required keys), or None."""
    if not isinstance(payload, Mapping):
        return "payload must be a JSON object"
    for key in REQUIRED_PAYLOAD_KEYS.get(kind, ()):
        value = payload.get(key)
        if value is None or value == "" or value == [] or value == {}:
            return f"payload.{key} is required for kind {kind!r} and must be non-empty"
    return None


def wrap_external_id(producer: str, kind: str, local_id: Any) -> str:
    """`{producer}:{kind}:{id}`: the identity the backend keys every entity by."""
    return f"{producer}:{kind}:{local_id}"


def events_body(batch_id: str, encoded_ops: list[bytes]) -> bytes:
    """The exact `events` request body from ops already encoded with `dumps`.

    Byte-identical to `dumps({"batch_id": batch_id, "events": ops})`, but lets a caller
    that staged encoded ops count and send the real body without decoding them again.
    """
    return b"".join(
        (b'{"batch_id":', dumps(batch_id), b',"events":[', b",".join(encoded_ops), b"]}")
    )


def events_body_size(batch_id: str, op_sizes: list[int]) -> int:
    """Length of `events_body(batch_id, ops)` given only the ops' encoded lengths."""
    overhead = len(b'{"batch_id":,"events":[]}') + len(dumps(batch_id))
    return overhead + sum(op_sizes) + max(len(op_sizes) - 1, 0)
