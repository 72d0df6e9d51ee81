"""The broker's response helpers: JSON via orjson, the one problem+json renderer, and the one
answer to the unexpected."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from starlette.responses import Response

from broker.errors import BrokerError, InternalError, problem_body
from broker.telemetry.request import RequestInfo

PROBLEM_TYPE = "application/problem+json"

log = structlog.get_logger("broker.request")


class JSONBytesResponse(Response):
    """A JSON response rendered with orjson, or given as ready bytes."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)


def problem_response(error: BrokerError, request_id: str) -> Response:
    """Render any broker error as ``application/problem+json``."""
    headers = {"Cache-Control": "no-store", **error.headers()}
    return Response(
        orjson.dumps(problem_body(error, request_id)),
        status_code=error.status,
        headers=headers,
        media_type=PROBLEM_TYPE,
    )


def refused(info: RequestInfo, error: BrokerError) -> Response:
    """The answer to a request the broker refused: recorded for its ``request`` line (the id, and
    the ``reason`` of an invalid token) and rendered by the one renderer."""
    info.error_id = error.id
    info.reason = error.extra.get("reason")
    return problem_response(error, info.request_id)


def unexpected(info: RequestInfo) -> Response:
    """The one answer to an exception no handler expected (a bug): logged with its traceback
    as ``request.internal_error``, answered 500 ``internal_error`` with nothing but the request
    id. Call it from an ``except Exception`` block."""
    log.exception("request.internal_error", request_id=info.request_id, route=info.route)
    info.error_id = InternalError.id
    return problem_response(InternalError(), info.request_id)
