"""What one request did, filled in as it is served and written as its ``request`` log line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.telemetry.tracing import Handle


@dataclass(slots=True)
class RequestInfo:
    """What one request did, filled in as it goes."""

    request_id: str
    trace_id: str
    traceparent: str  # to send upstream: our own span in the caller's trace
    route: str = "unmatched"
    shop: str = ""  # a configured shop's slug once the request is bound to one; else empty
    status: int = 0
    error_id: str | None = None
    cache: str | None = None
    upstream_status: int | None = None
    upstream_ms: float | None = None
    customer: str | None = None
    reason: str | None = None  # why a token was refused (invalid_token and the platform tokens)
    span: Handle | None = None  # the request's SERVER span, when tracing is enabled
