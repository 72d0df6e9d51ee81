"""The merchant server's routes: ``POST /tokens`` and ``POST /invalidations`` (issuer key)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from broker.config.settings import Shop
from broker.errors import InvalidToken
from broker.rules import inputs, issuers
from broker.services import Services
from broker.telemetry.logs import customer_hash
from broker.telemetry.request import RequestInfo
from broker.web.endpoints import bearer, json_body
from broker.web.responses import JSONBytesResponse


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def admit(request: Request, svc: Services, info: RequestInfo) -> Shop:
    """The shop of a valid issuer key; count and refuse a wrong one (``rules.issuers``)."""
    try:
        presented = bearer(request)
    except InvalidToken:
        presented = None
    shop = await issuers.admit(svc.limits, svc.settings, presented, client_of(request))
    info.shop = shop.slug
    return shop


async def mint_token(request: Request, svc: Services, info: RequestInfo) -> Response:
    """A customer token of the issuer key's shop for the merchant's logged-in customer (spec
    3.1, 2.1)."""
    shop = await admit(request, svc, info)
    wanted = inputs.token_request(await json_body(request))
    await issuers.confirm(svc.limits, shop, wanted.shop, client_of(request))
    minted = svc.minter.customer_token(wanted.customer_id, wanted.email, wanted.ttl, shop=shop.slug)
    info.customer = customer_hash(svc.log_key, wanted.customer_id)
    return JSONBytesResponse(minted.answer(), headers={"Cache-Control": "no-store"})


async def invalidate(request: Request, svc: Services, info: RequestInfo) -> Response:
    """Drop one customer's cached history in the issuer key's shop (spec 3.5, 2.1), for changes
    made outside the broker."""
    shop = await admit(request, svc, info)
    customer_id, named = inputs.invalidation_request(await json_body(request))
    await issuers.confirm(svc.limits, shop, named, client_of(request))
    info.customer = customer_hash(svc.log_key, customer_id)
    await svc.cache.invalidate(shop.slug, customer_id)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})
