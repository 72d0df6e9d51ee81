"""The broker's response helpers: JSON via orjson, and the one problem+json renderer."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from broker.errors import BrokerError, problem_body

PROBLEM_TYPE = "application/problem+json"


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
        status_code=error.status_code,
        headers=headers,
        media_type=PROBLEM_TYPE,
    )
