"""The edge of the Starlette routes (all but the two browser calls, see :mod:`broker.web.api`).

:func:`endpoint` wraps a handler ``(request, services, info)``: it names the route for the log
line and renders every failure with the one renderer. :func:`bearer` and :func:`json_body` read
what those handlers take from a request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response

from broker.errors import BrokerError, PayloadTooLarge
from broker.rules import inputs
from broker.services import Services, services_of
from broker.telemetry.request import RequestInfo
from broker.web.api import bearer_of
from broker.web.requestlog import request_info
from broker.web.responses import refused, unexpected

log = structlog.get_logger("broker.endpoints")

Handler = Callable[[Request, Services, RequestInfo], Awaitable[Response]]


def endpoint(route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: record its route, and turn every failure into a problem response."""

    async def run(request: Request) -> Response:
        info = request_info(request.scope)
        info.route = route
        try:
            return await handler(request, services_of(request.scope), info)
        except BrokerError as error:
            return refused(info, error)
        except Exception:
            return unexpected(info)

    return run


def bearer(request: Request) -> str | None:
    """The bearer credential of the one ``Authorization`` header, or None if there is none."""
    return bearer_of(request.headers.getlist("authorization"))


async def read_body(request: Request) -> bytes:
    """The request body, refused past 16 KiB without reading further."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > inputs.MAX_BODY:
        raise PayloadTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > inputs.MAX_BODY:
            raise PayloadTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object (content type, size and shape checked)."""
    raw = await read_body(request)
    inputs.check_content_type(request.headers.get("content-type"), bool(raw))
    return inputs.decode_object(raw)
