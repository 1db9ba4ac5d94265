"""The outermost ASGI layer: one access log line per request, and the test-control faults.

It sits outside FastAPI on purpose: it sees uvicorn's own `send`, so it can abort the
TCP connection for a `drop` or `truncate` fault, and it times and logs every request, including
the ones FastAPI refuses. Faults and the request log exist only with `--test-control`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from catalog_sync import protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTROL_PREFIX = "/_control/"
UPLOAD_PREFIX = "/upload/"
#: The fault path that matches every upload PUT (their paths carry a random token).
UPLOAD_ALIAS = "/upload"
ACTIONS = ("status", "status_after", "hang", "drop", "truncate")
#: `scope` key of a dict the application fills in (the verified tenant id).
SCOPE_INFO = "catalog_sync"

access_log = logging.getLogger("catalog_sync.receiver.access")
log = logging.getLogger("catalog_sync.receiver")


@dataclasses.dataclass
class Fault:
    method: str
    path: str
    action: str
    times: int = 1
    status: int | None = None
    retry_after: str | None = None
    seconds: float | None = None
    #: `truncate`: how many body bytes reach the application before the connection drops.
    after_bytes: int | None = None

    def problem(self) -> str | None:
        """Why this fault cannot be armed, or None."""
        if self.action not in ACTIONS:
            return f"action must be one of {', '.join(ACTIONS)}"
        if self.times < 1:
            return "times must be at least 1"
        if self.action in ("status", "status_after") and not (
            self.status is not None and 100 <= self.status <= 599
        ):
            return f"action {self.action!r} needs a status between 100 and 599"
        if self.action == "hang" and (self.seconds is None or self.seconds < 0):
            return "action 'hang' needs seconds >= 0"
        if self.action == "truncate" and (self.after_bytes is None or self.after_bytes < 0):
            return "action 'truncate' needs after_bytes >= 0"
        if not self.path.startswith("/"):
            return "path must start with /"
        return None

    def matches(self, method: str, path: str) -> bool:
        if self.method != "*" and self.method.upper() != method:
            return False
        if self.path == UPLOAD_ALIAS:
            return method == "PUT" and path.startswith(UPLOAD_PREFIX)
        return self.path == path


class Control:
    """Armed faults and the request log; touched only from the event loop."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        #: The next `short_ttl_times` inits get upload URLs that live `short_ttl` seconds.
        self.short_ttl: float = 0.0
        self.short_ttl_times = 0

    def upload_ttl(self, default: float) -> float:
        """The TTL of the upload URL an init hands out now, spending one short TTL."""
        if self.short_ttl_times <= 0:
            return default
        self.short_ttl_times -= 1
        return self.short_ttl

    def take(self, method: str, path: str) -> Fault | None:
        """The first armed fault matching the request, spending one of its `times`."""
        for fault in self.faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self.faults.clear()
        self.requests.clear()
        self.short_ttl_times = 0


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _log_path(path: str) -> str:
    """The path for log lines: an upload URL's token is a capability, so it is hidden."""
    return f"{UPLOAD_PREFIX}<token>" if path.startswith(UPLOAD_PREFIX) else path


async def json_response(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_body(code: str, message: str) -> bytes:
    return protocol.dumps({"error": {"code": code, "message": message}})


def _abort(send: Send) -> bool:
    """Abort the TCP connection under this request; False when it cannot be reached.

    uvicorn's `send` is a bound method of its per-request cycle, which holds the
    asyncio transport.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    transport.abort()
    return True


async def _drop(receive: Receive, send: Send) -> bool:
    """Abort the connection with no response at all.

    After the abort, wait until uvicorn notices the disconnect so it does not answer a
    500 on our behalf.
    """
    if not _abort(send):
        return False
    try:
        async with asyncio.timeout(5):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        pass
    return True


class Frontdoor:
    """Wraps the FastAPI app: access log always, faults and request log when `control`."""

    def __init__(self, app: ASGIApp, control: Control | None) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        info: dict[str, Any] = {"tenant": None}
        scope[SCOPE_INFO] = info
        state: dict[str, Any] = {"status": None, "body_bytes": 0}

        control = self.control
        is_control = control is not None and path.startswith(CONTROL_PREFIX)
        fault = None if control is None or is_control else control.take(method, path)
        # Cut before counting, so `body_bytes` is what the application saw.
        inner = (
            _truncating(receive, send, fault.after_bytes or 0)
            if fault is not None and fault.action == "truncate"
            else receive
        )

        async def counting_receive() -> Message:
            message = await inner()
            if message["type"] == "http.request":
                state["body_bytes"] += len(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        try:
            await self._dispatch(scope, counting_receive, recording_send, send, fault)
        finally:
            if not is_control:
                duration_ms = (time.perf_counter() - started) * 1000
                tenant = info["tenant"] or "-"
                status = state["status"] if state["status"] is not None else "-"
                extra = f" fault={fault.action}" if fault else ""
                access_log.info(
                    "%s %s %s tenant=%s %.1fms%s",
                    method,
                    _log_path(path),
                    status,
                    tenant,
                    duration_ms,
                    extra,
                )
                if control is not None:
                    length = _header(scope, b"content-length")
                    control.requests.append(
                        {
                            "method": method,
                            "path": path,
                            "status": state["status"],
                            "tenant_id": _header(scope, protocol.HEADER_TENANT.lower().encode()),
                            "nonce": _header(scope, protocol.HEADER_NONCE.lower().encode()),
                            "idempotency_key": _header(
                                scope, protocol.HEADER_IDEMPOTENCY.lower().encode()
                            ),
                            "content_length": int(length) if length and length.isdigit() else None,
                            "body_bytes": state["body_bytes"],
                            "fault": fault.action if fault else None,
                            "time": time.time(),
                        }
                    )

    async def _dispatch(
        self, scope: Scope, receive: Receive, send: Send, raw_send: Send, fault: Fault | None
    ) -> None:
        if fault is None:
            await self.app(scope, receive, send)
            return
        injected = error_body("injected_fault", f"test-control fault: {fault.action}")
        headers = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after else []
        if fault.action == "status":
            assert fault.status is not None
            await json_response(send, fault.status, injected, headers)
        elif fault.action == "status_after":
            assert fault.status is not None

            async def discard(_message: Message) -> None:
                return None

            await self.app(scope, receive, discard)
            await json_response(send, fault.status, injected, headers)
        elif fault.action == "hang":
            await asyncio.sleep(fault.seconds or 0)
            await self.app(scope, receive, send)
        # `raw_send` is uvicorn's own: only it leads to the transport.
        elif fault.action == "drop" and not await _drop(receive, raw_send):
            log.error("drop fault: no transport reachable; answering 500 instead")
            await json_response(send, 500, injected)
        elif fault.action == "truncate":  # the cut is in `receive` (see `__call__`)
            await self.app(scope, receive, send)


def _truncating(receive: Receive, raw_send: Send, limit: int) -> Receive:
    """A `receive` that hands the app the first `limit` body bytes, then cuts the line.

    The application sees a body shorter than its Content-Length followed by a
    disconnect, and the client sees its connection reset mid-request.
    """
    passed = 0

    async def cut_receive() -> Message:
        nonlocal passed
        if passed >= limit:
            _abort(raw_send)
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            kept = body[: limit - passed]
            passed += len(kept)
            if len(kept) < len(body):
                return {"type": "http.request", "body": kept, "more_body": True}
        return message

    return cut_receive
