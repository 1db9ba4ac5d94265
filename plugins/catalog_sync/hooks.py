"""`VoiceBotHook`: every call of the signed-ingest protocol, with its auth and retries.

Like Airflow's HttpHook, the hook owns the connection, the signing and the retry policy,
so a task only says *what* to send. The wire details (canonical string, headers, JSON
encoding, URL rules) come from `catalog_sync.protocol` and are never repeated here.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlsplit

import requests
from airflow.sdk import BaseHook

from catalog_sync import PLUGIN_VERSION, protocol
from catalog_sync.connections import get_connection
from catalog_sync.crashpoints import crash_point
from catalog_sync.errors import ConfigurationError, ProtocolError, TransientError

log = logging.getLogger(__name__)

#: `provider_id` sent on pairing: which kind of producer is connecting.
PROVIDER_ID = "airflow"
#: Pairing is interactive: three tries in total, then tell the person to try later.
PAIR_ATTEMPTS = 3
#: How much of the snapshot is read per step while it streams out.
UPLOAD_CHUNK = 1024 * 1024
#: The error body quoted in a message is cut to this many characters.
_DETAIL_LIMIT = 300

#: Upload answers that mean "this upload URL is spent" (used or expired, spec 6).
UPLOAD_URL_GONE = frozenset({409, 410})


class UploadUrlGone(TransientError):
    """The upload URL was used or has expired: announce the snapshot again (new init).

    Transient, not a configuration error: a PUT whose answer was lost, or a retry that
    came after the URL's lifetime, leaves the URL spent although nothing is wrong.
    """


_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def _pair_hint(conn_id: str) -> str:
    return (
        f"pair it with `catalog-sync pair CODE --base-url URL --conn-id {conn_id}` "
        f"(after `catalog-sync unpair --conn-id {conn_id}` if it exists)"
    )


@dataclass(frozen=True)
class Pairing:
    """What pairing hands back; `repr` leaves the secret out."""

    tenant_id: str
    shared_secret_b64: str = field(repr=False)
    ingest_url: str


@dataclass(frozen=True)
class RetryPolicy:
    """Spec section 9: how many tries, and how long to wait between them."""

    max_attempts: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    retry_after_cap: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigurationError(
                f"max_attempts must be an integer >= 1, not {self.max_attempts!r}"
            )
        for name in ("backoff_base", "backoff_max", "retry_after_cap"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must be >= 0, not {getattr(self, name)!r}")

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed `attempt` (1-based).

        A numeric `Retry-After` from the server wins (capped); otherwise exponential
        backoff plus up to 10 % jitter, so many workers do not retry in lockstep.
        """
        server_wait = _numeric_retry_after(retry_after)
        if server_wait is not None:
            return min(server_wait, self.retry_after_cap)
        backoff = min(self.backoff_base * 2 ** (attempt - 1), self.backoff_max)
        return backoff + random.uniform(0, backoff / 10)


def _numeric_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds when it is a plain non-negative number (an HTTP date is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    return seconds


def _error_detail(response: requests.Response) -> str:
    """The server's `{"error":{"code","message"}}`, or the start of whatever it sent."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code", "")
        message = body["error"].get("message", "")
        return f"{code}: {message}".strip(": ")
    text = response.text.strip()
    return text[:_DETAIL_LIMIT] if text else (response.reason or "")


class _Transport:
    """One requests.Session plus the retry loop; shared by the hook and by `pair`."""

    def __init__(
        self,
        *,
        timeout: float,
        connect_timeout: float,
        policy: RetryPolicy,
        logger: logging.Logger | Any,
        secret: str | None = None,
    ) -> None:
        self.session = requests.Session()
        self.timeouts = (connect_timeout, timeout)
        self.policy = policy
        self.logger = logger
        self._secret = secret

    def redact(self, text: str) -> str:
        """Belt and braces: no message this module builds may carry the secret."""
        if self._secret:
            return text.replace(self._secret, "***")
        return text

    def send(self, prepared: requests.PreparedRequest) -> requests.Response:
        settings = self.session.merge_environment_settings(prepared.url, {}, None, None, None)
        return self.session.send(prepared, timeout=self.timeouts, allow_redirects=False, **settings)

    def call(self, what: str, attempt: Callable[[], requests.Response]) -> requests.Response:
        """Run `attempt` until it succeeds, fails for good, or the attempts run out.

        `attempt` builds and sends a complete request each time: unsigned calls resend
        the same one, signed calls sign a fresh one (new nonce and timestamp).
        """
        attempts = self.policy.max_attempts
        cause = ""
        for number in range(1, attempts + 1):
            retry_after: str | None = None
            try:
                response = attempt()
            except _TRANSIENT_EXCEPTIONS as exc:
                cause = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return response
                detail = self.redact(_error_detail(response))
                if status == 429 or status >= 500:
                    cause = f"HTTP {status} {detail}".strip()
                    retry_after = response.headers.get("Retry-After")
                else:
                    raise ConfigurationError(
                        f"{what} was refused with HTTP {status} ({detail}); this is not "
                        "retried: fix the cause (configuration, pairing or request) and run again"
                    )
            cause = self.redact(cause)
            if number == attempts:
                break
            wait = self.policy.delay(number, retry_after)
            self.logger.warning(
                "%s failed (attempt %d of %d): %s; retrying in %.2f s",
                what,
                number,
                attempts,
                cause,
                wait,
            )
            time.sleep(wait)
        raise TransientError(f"{what} failed after {attempts} attempts; last cause: {cause}")


def _json_object(response: requests.Response, what: str) -> dict[str, Any]:
    """A 2xx answer's JSON object; an empty body counts as `{}`."""
    if not response.content:
        return {}
    try:
        body = protocol.loads(response.content)
    except ValueError:
        raise ProtocolError(
            f"{what} answered HTTP {response.status_code} with a body that is not JSON"
        ) from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{what} answered with JSON that is not an object")
    return body


def _required_string(body: Mapping[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(
            f"{what}: the response lacks {key!r} (a non-empty string is required); "
            "the backend does not speak protocol v2 as expected"
        )
    return value


def lookup_connection(conn_id: str) -> Any:
    """The Airflow Connection `conn_id`, or a `ConfigurationError` that says how to pair."""
    return get_connection(conn_id, missing_hint=_pair_hint(conn_id))


@dataclass(frozen=True)
class _Settings:
    """The validated connection: what every signed call needs."""

    tenant_id: str
    ingest_url: str
    site_url: str
    secret_b64: str = field(repr=False)
    key: bytes = field(repr=False)


def _mask(secret: str) -> None:
    """Register the secret with Airflow's masker so task logs show `***` instead."""
    from airflow.sdk.log import mask_secret

    mask_secret(secret)


class VoiceBotHook(BaseHook):
    """Talks to a VoiceBot ingest backend over the signed-ingest protocol v2.

    Connection: host = ingest URL, login = tenant id, password = shared secret (base64),
    extra `site_url`. `timeout` is the read timeout of each socket operation.
    """

    conn_name_attr = "voicebot_conn_id"
    default_conn_name = "voicebot_default"
    conn_type = "voicebot"
    hook_name = "VoiceBot ingest"

    def __init__(
        self,
        voicebot_conn_id: str = default_conn_name,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        retry_after_cap: float = 120.0,
        connection: Any = None,
    ) -> None:
        super().__init__()
        self.voicebot_conn_id = voicebot_conn_id
        self._connection = connection
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._policy = RetryPolicy(max_attempts, backoff_base, backoff_max, retry_after_cap)
        self._settings_cache: _Settings | None = None
        self._transport_cache: _Transport | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(voicebot_conn_id={self.voicebot_conn_id!r})"

    # --- connection -------------------------------------------------------------------

    @property
    def settings(self) -> _Settings:
        if self._settings_cache is None:
            conn = self._connection or lookup_connection(self.voicebot_conn_id)
            self._settings_cache = self._validate(conn)
        return self._settings_cache

    def _validate(self, conn: Any) -> _Settings:
        conn_id = self.voicebot_conn_id
        if conn.conn_type != self.conn_type:
            raise ConfigurationError(
                f"Airflow connection {conn_id!r} has conn_type {conn.conn_type!r}, "
                f"not {self.conn_type!r}; {_pair_hint(conn_id)}"
            )
        password = conn.password or ""
        if password:
            _mask(password)
        for attr, label in (
            ("host", "host (the ingest URL)"),
            ("login", "login (the tenant id)"),
            ("password", "password (the shared secret)"),
        ):
            if not getattr(conn, attr):
                raise ConfigurationError(
                    f"Airflow connection {conn_id!r} has no {label}; {_pair_hint(conn_id)}"
                )
        extra = conn.extra_dejson or {}
        if any(k in extra for k in ("password", "shared_secret", "shared_secret_b64", "secret")):
            raise ConfigurationError(
                f"Airflow connection {conn_id!r} carries a secret in `extra`; the shared "
                "secret belongs in the password field only: remove it from extra"
            )
        ingest_url = protocol.check_url(conn.host, "ingest URL (connection host)")
        parts = urlsplit(ingest_url)
        if parts.query or parts.fragment:
            raise ConfigurationError(
                f"the ingest URL {ingest_url!r} of connection {conn_id!r} has a query or "
                "fragment; give the plain URL that pairing returned"
            )
        site_url = extra.get("site_url") or ""
        if not isinstance(site_url, str):
            raise ConfigurationError(
                f"extra `site_url` of connection {conn_id!r} must be a string URL"
            )
        try:
            key = protocol.decode_secret(password)
        except ConfigurationError as exc:
            raise ConfigurationError(f"connection {conn_id!r}: {exc}") from None
        return _Settings(
            tenant_id=conn.login,
            ingest_url=ingest_url,
            site_url=site_url,
            secret_b64=password,
            key=key,
        )

    @property
    def _transport(self) -> _Transport:
        if self._transport_cache is None:
            self._transport_cache = _Transport(
                timeout=self._timeout,
                connect_timeout=self._connect_timeout,
                policy=self._policy,
                logger=self.log,
                secret=self.settings.secret_b64,
            )
        return self._transport_cache

    def get_conn(self) -> requests.Session:
        """The requests.Session every call of this hook goes through."""
        return self._transport.session

    # --- pairing (unsigned) -------------------------------------------------------------

    @classmethod
    def pair(
        cls,
        base_url: str,
        code: str,
        site_url: str = "",
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_attempts: int = PAIR_ATTEMPTS,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        retry_after_cap: float = 120.0,
    ) -> Pairing:
        """Trade a one-time pair code for credentials (unsigned POST on the base URL)."""
        base = protocol.check_url(base_url, "base URL")
        if not isinstance(code, str) or not code.strip():
            raise ConfigurationError("the pair code is empty; copy it from the backend")
        transport = _Transport(
            timeout=timeout,
            connect_timeout=connect_timeout,
            policy=RetryPolicy(max_attempts, backoff_base, backoff_max, retry_after_cap),
            logger=log,
        )
        body = protocol.dumps(
            {
                "pair_code": code.strip(),
                "site_url": site_url,
                "provider_id": PROVIDER_ID,
                "plugin_version": PLUGIN_VERSION,
            }
        )
        prepared = requests.Request(
            "POST",
            base + protocol.PAIR_PATH,
            headers=protocol.unsigned_headers(PLUGIN_VERSION),
            data=body,
        ).prepare()
        what = f"pairing with {base}"
        with transport.session:
            response = transport.call(what, lambda: transport.send(prepared))
        answer = _json_object(response, what)
        tenant_id = _required_string(answer, "tenant_id", what)
        secret = _required_string(answer, "shared_secret_b64", what)
        _mask(secret)
        try:
            protocol.decode_secret(secret)
        except ConfigurationError:
            raise ProtocolError(
                f"{what}: the response's shared_secret_b64 is not strict, non-empty base64; "
                "ask the backend operator for a new pair code and pair again"
            ) from None
        ingest_url = protocol.check_url(
            _required_string(answer, "ingest_url", what), "ingest URL returned by pairing"
        )
        return Pairing(tenant_id=tenant_id, shared_secret_b64=secret, ingest_url=ingest_url)

    # --- signed calls -------------------------------------------------------------------

    def _signed(
        self,
        method: str,
        endpoint: str,
        body: bytes,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        settings = self.settings
        transport = self._transport
        url = settings.ingest_url + endpoint
        what = f"{method} {endpoint}"

        def attempt() -> requests.Response:
            prepared = transport.session.prepare_request(
                requests.Request(method, url, data=body or None)
            )
            # Sign the path exactly as it goes on the wire (prefix included, no query).
            headers = protocol.signed_headers(
                key=settings.key,
                tenant_id=settings.tenant_id,
                method=method,
                path=urlsplit(prepared.url).path,
                body=body,
                plugin_version=PLUGIN_VERSION,
                site_url=settings.site_url,
            )
            if idempotency_key is not None:
                headers[protocol.HEADER_IDEMPOTENCY] = idempotency_key
            prepared.headers.update(headers)
            return transport.send(prepared)

        return _json_object(transport.call(what, attempt), what)

    def init(self, expected_counts: Mapping[str, int]) -> dict[str, Any]:
        """Announce a full snapshot; returns the answer with `sync_id` and `upload_url`."""
        counts = dict(expected_counts)
        if not counts:
            raise ProtocolError("init needs expected_counts for at least one kind")
        for kind, count in counts.items():
            if kind not in protocol.KINDS:
                raise ProtocolError(
                    f"init: unknown kind {kind!r} (known: {', '.join(protocol.KINDS)})"
                )
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ProtocolError(
                    f"init: expected_counts[{kind!r}] must be an integer >= 1, not {count!r}; "
                    "leave out kinds without lines"
                )
        payload: dict[str, Any] = {"sync_type": "full", "expected_counts": counts}
        if self.settings.site_url:
            payload["site_url"] = self.settings.site_url
        answer = self._signed("POST", protocol.INIT_PATH, protocol.dumps(payload))
        _required_string(answer, "sync_id", "init")
        protocol.check_url(_required_string(answer, "upload_url", "init"), "upload URL")
        return answer

    def upload(self, upload_url: str, source_uri: str, size: int | None = None) -> None:
        """PUT the gzipped snapshot at `source_uri` (file://, s3://, a path), streamed.

        Unsigned and carrying only `Content-Type` (+ `Content-Length`), so every attempt
        reopens the source and resends it as-is.
        """
        protocol.check_url(upload_url, "upload URL")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ProtocolError(f"upload size must be a non-negative integer, not {size!r}")
        if size is not None and size > protocol.MAX_FULL_BYTES:
            raise ProtocolError(
                f"the snapshot {source_uri} is {size} bytes; the backend accepts at most "
                f"{protocol.MAX_FULL_BYTES} bytes gzipped"
            )
        transport = self._transport
        what = f"upload of {source_uri}"

        def attempt() -> requests.Response:
            with _open_source(source_uri) as source:
                length = size if size is not None else _seekable_size(source)
                if length is not None and length > protocol.MAX_FULL_BYTES:
                    raise ProtocolError(
                        f"the snapshot {source_uri} is {length} bytes; the backend accepts "
                        f"at most {protocol.MAX_FULL_BYTES} bytes gzipped"
                    )
                data: Any = (
                    _iter_chunks(source)
                    if length is None
                    else _SizedBody(source, length, source_uri)
                )
                prepared = requests.Request(
                    "PUT", upload_url, headers={"Content-Type": "application/gzip"}, data=data
                ).prepare()
                response = transport.send(prepared)
            if response.status_code in UPLOAD_URL_GONE:
                detail = transport.redact(_error_detail(response))
                raise UploadUrlGone(
                    f"{what} was refused with HTTP {response.status_code} ({detail}): the "
                    "upload URL is spent; a new init hands out a fresh one"
                )
            return response

        transport.call(what, attempt)

    def finalize(self, sync_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Apply the uploaded snapshot; the key (default: `sync_id`) makes retries safe."""
        if not isinstance(sync_id, str) or not sync_id:
            raise ProtocolError("finalize needs the sync_id that init returned")
        return self._signed(
            "POST",
            protocol.FINALIZE_PATH,
            protocol.dumps({"sync_id": sync_id}),
            idempotency_key=idempotency_key or sync_id,
        )

    def post_events(self, batch_id: str, body: bytes) -> dict[str, Any]:
        """Send an events body encoded by `protocol.events_body`; `batch_id` is the key."""
        if not isinstance(batch_id, str) or not batch_id:
            raise ProtocolError("an events batch needs a non-empty batch_id")
        if len(body) > protocol.MAX_BATCH_BYTES:
            raise ProtocolError(
                f"events batch {batch_id!r} is {len(body)} bytes; the limit is "
                f"{protocol.MAX_BATCH_BYTES}: split it"
            )
        return self._signed("POST", protocol.EVENTS_PATH, body, idempotency_key=batch_id)

    def send_events(self, batch_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Encode `events` (ops from `protocol.upsert_op` / `delete_op`) and send them."""
        if len(events) > protocol.MAX_BATCH_EVENTS:
            raise ProtocolError(
                f"events batch {batch_id!r} holds {len(events)} ops; the limit is "
                f"{protocol.MAX_BATCH_EVENTS}: split it"
            )
        body = protocol.events_body(batch_id, [protocol.dumps(op) for op in events])
        return self.post_events(batch_id, body)

    def status(self) -> dict[str, Any]:
        return self._signed("GET", protocol.STATUS_PATH, b"")

    def unpair(self) -> dict[str, Any]:
        """Disconnect on the backend side (signed POST with a zero-byte body)."""
        return self._signed("POST", protocol.UNPAIR_PATH, b"")

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: a signed status call."""
        try:
            answer = self.status()
        except (ConfigurationError, TransientError) as exc:
            return False, str(exc)
        return True, f"connected (provider_status: {answer.get('provider_status', 'unknown')})"


# --- snapshot source streaming -------------------------------------------------------------


def _open_source(source_uri: str) -> IO[bytes]:
    """Open the staged file as raw bytes: a `.gz` must go out as it is, not decompressed."""
    import smart_open

    try:
        return smart_open.open(source_uri, "rb", compression="disable")
    except FileNotFoundError:
        raise ConfigurationError(f"the snapshot {source_uri} does not exist") from None


def _seekable_size(source: IO[bytes]) -> int | None:
    """The source's size when it can seek (local files, S3), else None (sent chunked)."""
    try:
        if not source.seekable():
            return None
        end = source.seek(0, 2)
        source.seek(0)
    except (OSError, ValueError, AttributeError):
        return None
    return int(end)


def _iter_chunks(source: IO[bytes]) -> Iterator[bytes]:
    while chunk := source.read(UPLOAD_CHUNK):
        yield chunk


class _SizedBody:
    """A read-only view of `source` that requests streams with a Content-Length.

    `__len__` gives requests the length without it reading anything; reading stops at
    `size` bytes, and a source that is shorter or longer than announced is refused
    instead of sending a truncated or cut-off snapshot.
    """

    def __init__(self, source: IO[bytes], size: int, source_uri: str) -> None:
        self._source = source
        self._size = size
        self._remaining = size
        self._uri = source_uri

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(UPLOAD_CHUNK):
            yield chunk

    def read(self, amount: int = -1) -> bytes:
        if self._remaining < self._size:  # some bytes are on their way already
            crash_point("mid_upload")
        if self._remaining == 0:
            if self._source.read(1):
                raise ConfigurationError(
                    f"the snapshot {self._uri} is larger than the size given ({self._size} bytes)"
                )
            return b""
        if amount is None or amount < 0:
            amount = UPLOAD_CHUNK
        chunk = self._source.read(min(amount, self._remaining, UPLOAD_CHUNK))
        if not chunk:
            raise ConfigurationError(
                f"the snapshot {self._uri} ended after {self._size - self._remaining} bytes, "
                f"before the size given ({self._size} bytes)"
            )
        self._remaining -= len(chunk)
        return chunk
