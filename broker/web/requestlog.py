"""The request middleware: request id, trace context, timing, one ``request`` log line.

Pure ASGI. It puts a :class:`RequestInfo` in the scope for handlers to fill in (route template,
cache outcome, upstream status, error id) and writes one ``request`` event when the answer is
sent, at a level chosen by the outcome (:func:`request_level`). ``request_id`` and ``trace_id``
are bound in structlog's context variables for the whole request, so every event logged while
serving it (the circuit opening, Redis going down) carries them. A request that escapes every
handler still gets a problem+json 500 here.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.telemetry.request import RequestInfo
from broker.web.responses import unexpected

if TYPE_CHECKING:
    from broker.telemetry.tracing import Tracing

log = structlog.get_logger("broker.request")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
INFO_KEY = "broker.info"
# Probes and scrapes arrive every few seconds and say nothing new: debug, whatever their outcome.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def request_info(scope: Scope) -> RequestInfo:
    info: RequestInfo = scope[INFO_KEY]
    return info


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def trace_context(incoming: str | None) -> tuple[str, str, str | None, bool]:
    """(trace id, traceparent for the upstream call, incoming parent span id, sampled).

    Continues a valid trace, or starts one (no parent span id, sampled).
    """
    match = TRACEPARENT.fullmatch(incoming.strip().lower()) if incoming else None
    if match and match[1] != "0" * 32 and match[2] != "0" * 16:
        trace_id, parent, flags = match[1], match[2], match[3]
    else:
        trace_id, parent, flags = secrets.token_hex(16), None, "01"
    sampled = bool(int(flags, 16) & 1)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-{flags}", parent, sampled


def request_level(route: str, status: int, error_id: str | None) -> str:
    """The level of a request line: 5xx error; failed issuer keys and 429s warning; probes and
    scrapes debug; everything else info."""
    if route in QUIET_ROUTES:
        return "debug"
    if status >= 500:
        return "error"
    if status == 429 or error_id == "invalid_issuer_key":
        return "warning"
    return "info"


Observer = Callable[[RequestInfo, str, float], None]


class TelemetryMiddleware:
    def __init__(
        self, app: ASGIApp, observe: Observer | None = None, tracing: Tracing | None = None
    ) -> None:
        self.app = app
        self.observe = observe
        # None when span export is off, so the hot path pays one ``is None`` check.
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        valid = incoming is not None and REQUEST_ID.fullmatch(incoming) is not None
        request_id = incoming if valid and incoming else secrets.token_hex(16)
        trace_id, traceparent, parent, sampled = trace_context(_header(scope, b"traceparent"))
        tracing = self.tracing
        span = None
        if tracing is not None:
            span, trace_id = tracing.start_request(scope["method"], trace_id, parent, sampled)
        info = RequestInfo(request_id, trace_id, traceparent, span=span)
        scope[INFO_KEY] = info
        bound = structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=trace_id)
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                info.status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            response = unexpected(info)
            if not response_started:
                await response(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - started
            level = request_level(info.route, info.status, info.error_id)
            getattr(log, level)(
                "request",
                method=scope["method"],
                route=info.route,
                shop=info.shop,
                status=info.status,
                duration_ms=round(seconds * 1000, 2),
                request_id=request_id,
                trace_id=trace_id,
                cache=info.cache,
                upstream_status=info.upstream_status,
                upstream_ms=info.upstream_ms,
                error_id=info.error_id,
                reason=info.reason,
                customer=info.customer,
                client=client[0] if (client := scope.get("client")) else None,
            )
            structlog.contextvars.reset_contextvars(**bound)
            if span is not None:
                assert tracing is not None
                tracing.end_request(
                    span, scope["method"], info.route, info.status, info.error_id, info.cache
                )
            if self.observe is not None:
                self.observe(info, scope["method"], seconds)
