"""The operator's routes: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import hmac

import orjson
from starlette.requests import Request
from starlette.responses import Response

from broker.errors import MissingToken, NotReady
from broker.openapi.document import openapi_document
from broker.services import Services
from broker.telemetry.request import RequestInfo
from broker.web.endpoints import bearer
from broker.web.responses import JSONBytesResponse

NO_STORE = {"Cache-Control": "no-store"}


async def healthz(request: Request, svc: Services, info: RequestInfo) -> Response:
    """Liveness: the process answers (no I/O)."""
    return JSONBytesResponse({"status": "ok"}, headers=NO_STORE)


async def readyz(request: Request, svc: Services, info: RequestInfo) -> Response:
    """Readiness, with the Redis state the store's background ping keeps current."""
    if not svc.ready:
        raise NotReady()
    return JSONBytesResponse({"status": "ready", "redis": svc.store.state}, headers=NO_STORE)


async def metrics(request: Request, svc: Services, info: RequestInfo) -> Response:
    """Prometheus text, behind ``BROKER_METRICS_TOKEN`` when it is set."""
    token = svc.settings.metrics_token
    if token is not None:
        presented = bearer(request)
        if presented is None or not hmac.compare_digest(
            presented.encode(), token.reveal().encode()
        ):
            raise MissingToken("/metrics needs the metrics bearer token.")
    body, content_type = svc.metrics.render()
    return Response(body, media_type=content_type, headers=NO_STORE)


async def openapi(request: Request, svc: Services, info: RequestInfo) -> Response:
    """The OpenAPI document of this app's own routes, built at the first request and kept."""
    state = request.app.state
    document: bytes | None = getattr(state, "openapi", None)
    if document is None:
        document = orjson.dumps(openapi_document(svc.settings, request.app.routes))
        state.openapi = document
    return JSONBytesResponse(document)
