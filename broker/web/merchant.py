"""The merchant server's routes: ``POST /tokens`` and ``POST /invalidations`` (issuer key)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from broker.errors import InvalidToken
from broker.rules import inputs, issuers
from broker.services import Services
from broker.telemetry.logs import customer_hash
from broker.telemetry.request import RequestInfo
from broker.web.endpoints import bearer, json_body
from broker.web.responses import JSONBytesResponse


async def admit(request: Request, svc: Services) -> None:
    """Let a valid issuer key through; count and refuse a wrong one (``rules.issuers``)."""
    try:
        presented = bearer(request)
    except InvalidToken:
        presented = None
    client = request.client.host if request.client else "unknown"
    await issuers.admit(svc.limits, svc.settings, presented, client)


async def mint_token(request: Request, svc: Services, info: RequestInfo) -> Response:
    """A customer token for the merchant's logged-in customer (spec 3.1)."""
    await admit(request, svc)
    wanted = inputs.token_request(await json_body(request))
    minted = svc.minter.customer_token(wanted.customer_id, wanted.email, wanted.ttl)
    info.customer = customer_hash(svc.log_key, wanted.customer_id)
    return JSONBytesResponse(minted.answer(), headers={"Cache-Control": "no-store"})


async def invalidate(request: Request, svc: Services, info: RequestInfo) -> Response:
    """Drop one customer's cached history (spec 3.5), for changes made outside the broker."""
    await admit(request, svc)
    customer_id = inputs.invalidation_request(await json_body(request))
    info.customer = customer_hash(svc.log_key, customer_id)
    await svc.cache.invalidate(svc.settings.shop, customer_id)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})
