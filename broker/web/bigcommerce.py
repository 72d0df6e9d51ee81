"""POST /bigcommerce/token: a customer token for a BigCommerce storefront (spec 3.8).

The storefront's script fetches ``/customer/current.jwt?app_client_id=<client id>`` from its own
store and posts the answer here as ``{"token": "<jwt>"}``; the JWT is checked as BigCommerce
documents it (:mod:`broker.rules.bigcommerce`) and the answer is what ``POST /tokens`` answers for
that customer, with the customer's email as ``ce``. The browser calls this route, so it is one of
the CORS routes (:mod:`broker.web.cors`); it exists only when the three ``BROKER_BIGCOMMERCE_``
variables are set (404 ``not_found`` otherwise).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from broker.errors import NotFound
from broker.rules import bigcommerce, inputs
from broker.telemetry.logs import customer_hash
from broker.web.endpoints import json_body
from broker.web.responses import JSONBytesResponse

if TYPE_CHECKING:
    from broker.services import Services
    from broker.telemetry.request import RequestInfo

METHODS = ("POST", "OPTIONS")


async def bigcommerce_token(request: Request, svc: Services, info: RequestInfo) -> Response:
    """The handler: 404 unless configured, then the ``POST /tokens`` answer for the shopper."""
    if request.method == "OPTIONS":
        # Not a preflight of an allowed origin (broker.web.cors answers those, configured or
        # not): the methods, as a preflight would say them. The POST says whether it is here.
        return Response(status_code=204, headers={"Allow": ", ".join(METHODS)})
    settings = svc.settings
    stores = bigcommerce.BigCommerceStore.every(settings)
    if not stores:
        raise NotFound()
    token = inputs.platform_token_request(await json_body(request))
    verifier = bigcommerce.CurrentCustomer(stores, settings.clock_leeway)
    client = request.client.host if request.client else "unknown"
    customer = await bigcommerce.admit(svc.limits, verifier, token, client, time.time())
    shop = settings.shops.shop_for_bigcommerce(customer.store_hash)
    assert shop is not None  # the verifier knows only the shops' stores
    info.shop = shop.slug
    minted = svc.minter.customer_token(customer.id, customer.email, None, shop=shop.slug)
    info.customer = customer_hash(svc.log_key, customer.id)
    return JSONBytesResponse(minted.answer(), headers={"Cache-Control": "no-store"})
