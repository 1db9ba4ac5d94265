"""The receiver's HTTP service: signed-ingest protocol v2 (spec 5 to 8) on FastAPI.

Request bodies are read by hand, never by FastAPI's body parsing: the signature is
over the exact raw bytes, oversized bodies must be refused while streaming, and the
snapshot upload goes to disk chunk by chunk. Database work runs in worker threads so
a slow finalize never stalls other requests.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from catalog_sync import protocol
from catalog_sync.receiver import frontdoor
from catalog_sync.receiver.store import DEFAULT_UPLOAD_TTL_S, ReceiverError, ReceiverStore

log = logging.getLogger("catalog_sync.receiver")

#: Non-upload bodies may exceed the events batch limit by this much before 413.
BODY_SLACK = 64 * 1024
MAX_BODY = protocol.MAX_BATCH_BYTES + BODY_SLACK
MAX_IDEMPOTENCY_KEY = 255
UPLOAD_CHUNK_LOG = 1 << 20
GZIP_TYPES = frozenset({"application/gzip", "application/x-gzip"})


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        frontdoor.error_body(code, message),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _json(value: Any, status: int = 200) -> Response:
    return Response(protocol.dumps(value), status_code=status, media_type="application/json")


async def _read_body(request: Request, limit: int, code: str) -> bytes:
    """The raw body, refused with 413 as soon as it passes `limit` (never read whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ReceiverError(413, code, f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ReceiverError(413, code, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _signed_path(request: Request) -> str:
    """The path as sent on the wire (what the client signed), without the query."""
    raw = request.scope.get("raw_path")
    if raw:
        return raw.decode("latin-1").split("?", 1)[0]
    return request.scope["path"]


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = protocol.loads(body)
    except ValueError:
        raise ReceiverError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ReceiverError(400, "invalid_request", "the body must be a JSON object")
    return value


def _string_field(body: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = body.get(name)
    if not isinstance(value, str) or (not value and not allow_empty) or "\x00" in value:
        raise ReceiverError(
            400,
            "invalid_request",
            f"field {name!r} is required and must be a "
            f"{'' if allow_empty else 'non-empty '}string without NUL characters",
        )
    return value


def _idempotency_key(request: Request) -> str:
    key = request.headers.get(protocol.HEADER_IDEMPOTENCY)
    if not key:
        raise ReceiverError(
            400, "missing_idempotency_key", f"the {protocol.HEADER_IDEMPOTENCY} header is required"
        )
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise ReceiverError(
            400,
            "invalid_idempotency_key",
            f"the {protocol.HEADER_IDEMPOTENCY} header is longer than {MAX_IDEMPOTENCY_KEY}",
        )
    return key


def create_app(
    store: ReceiverStore,
    data_dir: Path,
    *,
    control: frontdoor.Control | None = None,
    upload_ttl: float = DEFAULT_UPLOAD_TTL_S,
    max_upload_bytes: int = protocol.MAX_FULL_BYTES,
) -> frontdoor.Frontdoor:
    """The ASGI application: FastAPI wrapped in the access-log/fault front door."""
    uploads = data_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    app = FastAPI(
        title="catalog-sync reference receiver",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(ReceiverError)
    async def _receiver_error(_request: Request, exc: ReceiverError) -> Response:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(ClientDisconnect)
    async def _disconnect(_request: Request, _exc: ClientDisconnect) -> Response:
        # Nobody is listening any more; the status only reaches the access log.
        return _error(499, "client_disconnected", "the client went away")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.error("unexpected %s while handling a request", type(exc).__name__, exc_info=exc)
        return _error(500, "internal_error", "the receiver failed; see its log")

    def url_of(tenant_ingest_url: str, token: str) -> str:
        return f"{tenant_ingest_url.rstrip('/')}{frontdoor.UPLOAD_PREFIX}{token}"

    async def authenticate(
        request: Request, *, limit: int = MAX_BODY, too_large: str = "body_too_large"
    ) -> tuple[str, bytes]:
        """Spec 5, in its order; returns the tenant id and the raw body."""
        headers = request.headers
        tenant_id = headers.get(protocol.HEADER_TENANT)
        timestamp = headers.get(protocol.HEADER_TIMESTAMP)
        nonce = headers.get(protocol.HEADER_NONCE)
        signature = headers.get(protocol.HEADER_SIGNATURE)
        if not (tenant_id and timestamp and nonce and signature):
            raise ReceiverError(
                401,
                "missing_signature_headers",
                "signed calls need the tenant, timestamp, nonce and signature headers",
            )
        if headers.get(protocol.HEADER_PROTOCOL) != protocol.PROTOCOL_VERSION:
            raise ReceiverError(
                426,
                "protocol_upgrade_required",
                f"this receiver speaks protocol version {protocol.PROTOCOL_VERSION} only",
            )
        key = await to_thread.run_sync(store.tenant_key, tenant_id)
        if key is None:
            raise ReceiverError(401, "not_paired", "this tenant is not paired; pair again")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12) or (
            abs(time.time() - int(timestamp)) > protocol.TIMESTAMP_TOLERANCE_S
        ):
            raise ReceiverError(
                401,
                "stale_timestamp",
                "the timestamp is not epoch seconds within 300 s of the receiver's clock",
            )
        body = await _read_body(request, limit, too_large)
        if not protocol.signature_matches(
            key, request.method, _signed_path(request), timestamp, nonce, body, signature
        ):
            raise ReceiverError(401, "bad_signature", "the signature does not match the request")
        if not protocol.is_valid_nonce(nonce):
            raise ReceiverError(
                401, "invalid_nonce", "the nonce must be 32 lowercase hex characters"
            )
        if not await to_thread.run_sync(store.claim_nonce, tenant_id, nonce):
            raise ReceiverError(401, "nonce_replay", "this nonce was already used; sign again")
        request.scope[frontdoor.SCOPE_INFO]["tenant"] = tenant_id
        return tenant_id, body

    @app.post(protocol.PAIR_PATH)
    async def pair(request: Request) -> Response:
        body = _json_object(await _read_body(request, MAX_BODY, "body_too_large"))
        code = _string_field(body, "pair_code")
        site_url = _string_field(body, "site_url", allow_empty=True)
        provider_id = _string_field(body, "provider_id")
        plugin_version = _string_field(body, "plugin_version")
        known = {"pair_code", "site_url", "provider_id", "plugin_version"}
        extra = {k: v for k, v in body.items() if k not in known}
        result = await to_thread.run_sync(
            lambda: store.pair(
                code,
                site_url=site_url,
                provider_id=provider_id,
                plugin_version=plugin_version,
                extra=extra,
            )
        )
        request.scope[frontdoor.SCOPE_INFO]["tenant"] = result["tenant_id"]
        log.info("paired tenant %s (provider %r)", result["tenant_id"], provider_id)
        return _json(result)

    @app.post(protocol.INIT_PATH)
    async def init(request: Request) -> Response:
        tenant_id, raw = await authenticate(request)
        body = _json_object(raw)
        if body.get("sync_type") != "full":
            raise ReceiverError(400, "invalid_request", "sync_type must be 'full'")
        counts = body.get("expected_counts")
        if not isinstance(counts, dict) or not counts:
            raise ReceiverError(
                400, "invalid_request", "expected_counts must be a non-empty object {kind: lines}"
            )
        for kind, count in counts.items():
            if kind not in protocol.KINDS:
                raise ReceiverError(
                    400, "unknown_kind", f"expected_counts names unknown kind {kind!r}"
                )
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ReceiverError(
                    400,
                    "invalid_request",
                    f"expected_counts[{kind!r}] must be a non-negative integer",
                )
        site_url = None
        if body.get("site_url") is not None:
            site_url = _string_field(body, "site_url", allow_empty=True)
        ttl = upload_ttl if control is None else control.upload_ttl(upload_ttl)
        sync_id, token = await to_thread.run_sync(
            store.create_sync, tenant_id, counts, site_url, ttl
        )
        ingest_url = await to_thread.run_sync(store.tenant_ingest_url, tenant_id)
        return _json({"sync_id": sync_id, "upload_url": url_of(ingest_url, token)})

    @app.put(frontdoor.UPLOAD_PREFIX + "{token}")
    async def upload(request: Request, token: str) -> Response:
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type not in GZIP_TYPES:
            raise ReceiverError(
                415, "unsupported_media_type", "upload with Content-Type: application/gzip"
            )
        declared = request.headers.get("content-length")
        too_large = f"the snapshot is larger than {max_upload_bytes} bytes (gzipped)"
        if declared is not None and declared.isdigit() and int(declared) > max_upload_bytes:
            raise ReceiverError(413, "upload_too_large", too_large)
        sync_id = await to_thread.run_sync(store.begin_upload, token)
        final = uploads / f"{sync_id}.ndjson.gz"
        partial = final.with_name(final.name + ".part")
        size = 0
        try:
            with partial.open("wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise ReceiverError(413, "upload_too_large", too_large)
                    out.write(chunk)
            partial.replace(final)
        except BaseException:
            # Also on cancellation: release the URL so the client may resend as-is.
            partial.unlink(missing_ok=True)
            store.end_upload(sync_id, None)
            raise
        await to_thread.run_sync(store.end_upload, sync_id, size)
        return _json({"sync_id": sync_id, "bytes": size})

    @app.post(protocol.FINALIZE_PATH)
    async def finalize(request: Request) -> Response:
        tenant_id, raw = await authenticate(request)
        key = _idempotency_key(request)
        sync_id = _string_field(_json_object(raw), "sync_id")
        if len(sync_id) > 32:
            raise ReceiverError(404, "unknown_sync", "no such sync for this tenant")
        path = uploads / f"{sync_id}.ndjson.gz"
        result = await to_thread.run_sync(store.finalize, tenant_id, sync_id, key, path)
        if not result.get("idempotent_replay"):
            path.unlink(missing_ok=True)
        return _json(result)

    @app.post(protocol.EVENTS_PATH)
    async def events(request: Request) -> Response:
        tenant_id, raw = await authenticate(
            request, limit=protocol.MAX_BATCH_BYTES, too_large="batch_too_large"
        )
        key = _idempotency_key(request)
        body = _json_object(raw)
        batch_id = _string_field(body, "batch_id")
        if batch_id != key:
            raise ReceiverError(
                400,
                "idempotency_key_mismatch",
                f"the {protocol.HEADER_IDEMPOTENCY} header must equal batch_id",
            )
        ops = body.get("events")
        if not isinstance(ops, list):
            raise ReceiverError(400, "invalid_request", "events must be a list of ops")
        if len(ops) > protocol.MAX_BATCH_EVENTS:
            raise ReceiverError(
                413,
                "batch_too_large",
                f"a batch holds at most {protocol.MAX_BATCH_EVENTS} ops, got {len(ops)}",
            )
        result = await to_thread.run_sync(store.apply_events, tenant_id, key, ops)
        return _json(result)

    @app.get(protocol.STATUS_PATH)
    async def status(request: Request) -> Response:
        tenant_id, _body = await authenticate(request)
        counts = await to_thread.run_sync(store.entity_counts, tenant_id)
        return _json({"provider_status": "connected", "tenant_id": tenant_id, "entities": counts})

    @app.post(protocol.UNPAIR_PATH)
    async def unpair(request: Request) -> Response:
        tenant_id, _body = await authenticate(request)
        await to_thread.run_sync(store.unpair, tenant_id)
        log.info("unpaired tenant %s", tenant_id)
        return _json({"tenant_id": tenant_id, "provider_status": "unpaired"})

    if control is not None:
        _add_control_routes(app, control)
    return frontdoor.Frontdoor(app, control)


def _add_control_routes(app: FastAPI, control: frontdoor.Control) -> None:
    """`/_control/*`: no auth, tests on loopback only (`--test-control`)."""

    @app.post(frontdoor.CONTROL_PREFIX + "faults")
    async def add_fault(request: Request) -> Response:
        body = _json_object(await request.body())
        try:
            fault = frontdoor.Fault(
                method=str(body["method"]).upper(),
                path=str(body["path"]),
                action=str(body["action"]),
                times=int(body.get("times", 1)),
                status=None if body.get("status") is None else int(body["status"]),
                retry_after=None if body.get("retry_after") is None else str(body["retry_after"]),
                seconds=None if body.get("seconds") is None else float(body["seconds"]),
                after_bytes=(None if body.get("after_bytes") is None else int(body["after_bytes"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReceiverError(400, "invalid_fault", f"bad fault: {exc!r}") from None
        problem = fault.problem()
        if problem:
            raise ReceiverError(400, "invalid_fault", problem)
        control.faults.append(fault)
        return _json({"armed": len(control.faults)}, status=201)

    @app.post(frontdoor.CONTROL_PREFIX + "upload_ttl")
    async def short_upload_ttl(request: Request) -> Response:
        """The next `times` inits hand out upload URLs that expire after `seconds`."""
        body = _json_object(await request.body())
        try:
            seconds, times = float(body["seconds"]), int(body.get("times", 1))
        except (KeyError, TypeError, ValueError) as exc:
            raise ReceiverError(400, "invalid_ttl", f"bad upload TTL: {exc!r}") from None
        if seconds < 0 or times < 1:
            raise ReceiverError(400, "invalid_ttl", "needs seconds >= 0 and times >= 1")
        control.short_ttl, control.short_ttl_times = seconds, times
        return _json({"seconds": seconds, "times": times}, status=201)

    @app.get(frontdoor.CONTROL_PREFIX + "faults")
    async def list_faults() -> Response:
        return JSONResponse([vars(f) for f in control.faults])

    @app.get(frontdoor.CONTROL_PREFIX + "requests")
    async def list_requests() -> Response:
        return _json(control.requests)

    @app.post(frontdoor.CONTROL_PREFIX + "clear")
    async def clear() -> Response:
        control.clear()
        return _json({"cleared": True})


def serve(
    host: str,
    port: int,
    db_url: str,
    data_dir: str | os.PathLike[str],
    test_control: bool = False,
    *,
    upload_ttl: float = DEFAULT_UPLOAD_TTL_S,
    max_upload_bytes: int = protocol.MAX_FULL_BYTES,
    log_level: str = "info",
    landing: str | None = None,
) -> int:
    """Run the receiver until interrupted; returns the process exit code."""
    import uvicorn

    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    store = ReceiverStore(db_url, landing=landing)
    if store.landing is not None:
        log.info("landing %s", store.landing.describe())
    control = frontdoor.Control() if test_control else None
    app = create_app(
        store,
        Path(data_dir),
        control=control,
        upload_ttl=upload_ttl,
        max_upload_bytes=max_upload_bytes,
    )
    log.info(
        "receiver on http://%s:%d, database %s, data in %s%s",
        host,
        port,
        store.safe_url,
        data_dir,
        " (TEST CONTROL ENABLED: do not expose)" if test_control else "",
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level=log_level.lower(),
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="off",
    )
    try:
        uvicorn.Server(config).run()
    finally:
        store.dispose()
    return 0
