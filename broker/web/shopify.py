"""GET /shopify/token: a customer token for a Shopify storefront, through an app proxy (spec 3.6).

A Shopify store has no server of its own to call ``POST /tokens``. A Shopify app proxy forwards
the storefront's ``/apps/<prefix>/token`` to this route, adding ``shop``,
``logged_in_customer_id``, ``path_prefix``, ``timestamp`` and a ``signature`` that Shopify
computes as its documentation shows: every other query parameter written ``name=value``
(several values of one name joined by commas), those strings sorted and concatenated with no
separator, HMAC-SHA256 with the app's shared secret, hex. The broker recomputes it, compares in
constant time, then checks the shop, the timestamp (1-12 ASCII digits, 5 minutes either way) and
that a customer is logged in, and answers what ``POST /tokens`` answers for that customer. A
parameter the proxy adds once (``signature``, ``shop``, ``timestamp``,
``logged_in_customer_id``, ``path_prefix``) that appears twice is a bad signature.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from broker.errors import CustomerNotLoggedIn, InvalidInput, InvalidProxySignature, NotFound
from broker.rules import inputs
from broker.telemetry.logs import customer_hash
from broker.web.responses import JSONBytesResponse

if TYPE_CHECKING:
    from broker.services import Services
    from broker.telemetry.request import RequestInfo

MAX_SKEW = 300  # seconds between Shopify's timestamp and our clock, either way
TIMESTAMP_DIGITS = 12
# What Shopify's app proxy adds exactly once to every request it forwards.
SINGLE = ("signature", "shop", "timestamp", "logged_in_customer_id", "path_prefix")


def proxy_signature(params: Iterable[tuple[str, str]], secret: str) -> str:
    """Shopify's app proxy signature of a query (its ``signature`` parameter left out)."""
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        if name != "signature":
            grouped.setdefault(name, []).append(value)
    message = "".join(sorted(f"{name}={','.join(values)}" for name, values in grouped.items()))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def only(params: list[tuple[str, str]], name: str) -> str | None:
    """The one value of ``name``, None when absent; a parameter Shopify sends once and that
    appears twice is no request of Shopify's."""
    values = [value for key, value in params if key == name]
    if len(values) > 1:
        raise InvalidProxySignature(f"The proxy request names '{name}' more than once.")
    return values[0] if values else None


def verified_customer(params: list[tuple[str, str]], secret: str, shop: str, now: float) -> str:
    """The logged-in customer id of a genuine app proxy request, or the error to answer."""
    for name in SINGLE:
        only(params, name)  # refused before anything is read from a doubled parameter
    presented = only(params, "signature")
    expected = proxy_signature(params, secret)
    if presented is None or not hmac.compare_digest(expected.encode(), presented.encode()):
        raise InvalidProxySignature()
    if only(params, "shop") != shop:
        raise InvalidProxySignature("The proxy request is for another store.")
    stamp = only(params, "timestamp") or ""
    # Bounded before conversion: 12 digits is far beyond any clock, and never a huge int().
    if not (0 < len(stamp) <= TIMESTAMP_DIGITS and stamp.isascii() and stamp.isdigit()):
        raise InvalidProxySignature("The proxy request's timestamp is not whole seconds.")
    if abs(now - int(stamp)) > MAX_SKEW:
        raise InvalidProxySignature("The proxy request is too old, or its clock is wrong.")
    customer = only(params, "logged_in_customer_id")
    if not customer:
        raise CustomerNotLoggedIn()
    return customer


async def shopify_token(request: Request, svc: Services, info: RequestInfo) -> Response:
    """The handler: Shopify's ``shop`` parameter selects the shop (spec 2.1); 404 when no shop
    has a Shopify app proxy; then the ``POST /tokens`` answer for the customer."""
    shops = svc.settings.shops
    if not any(s.shopify is not None for s in shops):
        raise NotFound()
    params = request.query_params.multi_items()
    shop = shops.for_shopify(only(params, "shop"))
    if shop is None or shop.shopify is None:
        # A store no shop is configured for: refused as a request for another store.
        raise InvalidProxySignature("The proxy request is for another store.")
    info.shop = shop.slug
    customer = verified_customer(
        params, shop.shopify.secret.reveal(), shop.shopify.shop, time.time()
    )
    try:
        wanted = inputs.token_request({"customer_id": customer})
    except InvalidInput as error:
        unusable = "The proxy named a customer id the broker cannot use."
        raise InvalidProxySignature(unusable) from error
    minted = svc.minter.customer_token(wanted.customer_id, None, None, shop=shop.slug)
    info.customer = customer_hash(svc.log_key, wanted.customer_id)
    return JSONBytesResponse(minted.answer(), headers={"Cache-Control": "no-store"})
