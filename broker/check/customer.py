"""``broker check --customer ID``: one real CustomerReferrals2 read, as the broker would make it.

The read goes through the broker's own :class:`~broker.upstream.client.Upstream` client with the
same upstream customer token the broker signs for a shopper, so what it finds is what that shopper
would meet: an unknown customer, an identity mismatch, a rejected key, a slow or absent
Bubblehouse. The outcome is (ok, plain words); Bubblehouse's own text is never echoed, only its
documented ids. :mod:`broker.check.checks` turns the outcome into a finding.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import orjson

from broker.config.settings import Settings
from broker.errors import (
    BrokerError,
    UpstreamMisconfigured,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from broker.rules.functions import READ
from broker.rules.inputs import customer_id as valid_customer_id
from broker.rules.tokens import Customer, TokenMinter
from broker.upstream.client import CallInfo, Upstream

FUNCTION = READ.name

UNKNOWN_CUSTOMER = (
    "Bubblehouse does not know customer {id} yet: customers are synced to Bubblehouse by the "
    "shop's platform integration (the Bubblehouse app or plugin, or your own customer and order "
    "pushes), usually at sign-up or first order. Until then this customer's referral calls get "
    "404 no_customers_match_customer_identity. Check that the id is the platform's customer id "
    "(the one your server sends to POST /tokens) and that the sync has run"
)
PARTIAL_MISMATCH = (
    "Bubblehouse knows customer {id} but part of the identity disagrees with its record (404 "
    "customer_identity_partially_mismatches_matched_customer): usually the email your server "
    "puts in tokens differs from the one Bubblehouse holds; send the email exactly as the shop "
    "stores it, or none"
)


def _answer(body: bytes, customer: str) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:  # the upstream client already checked it is a JSON object
        data = {}
    rows = data.get("referrals") if isinstance(data, dict) else None
    if isinstance(rows, list):
        count = len(rows)
        return (
            f"CustomerReferrals2 answered for customer {customer}: "
            f"{count} referral{'s' if count != 1 else ''} in the history"
        )
    return (
        f"CustomerReferrals2 answered for customer {customer} without a referrals list "
        "(the broker passes the answer on unchanged)"
    )


def judge(error: BrokerError, customer: str, settings: Settings) -> str:
    """A failed read, in plain words naming what to check."""
    if isinstance(error, UpstreamRejected):
        if error.id == "no_customers_match_customer_identity":
            return UNKNOWN_CUSTOMER.format(id=customer)
        if error.id == "customer_identity_partially_mismatches_matched_customer":
            return PARTIAL_MISMATCH.format(id=customer)
        return (
            f"Bubblehouse refused CustomerReferrals2 for customer {customer} with HTTP "
            f"{error.status} ({error.id})"
        )
    if isinstance(error, UpstreamMisconfigured):
        return (
            "Bubblehouse rejected the broker's customer token or API version on "
            "CustomerReferrals2 — check BROKER_SIGNING_KEYS, BROKER_SHOP and BROKER_API_VERSIONS"
        )
    if isinstance(error, UpstreamRateLimited):
        return (
            f"Bubblehouse is rate limiting customer {customer} right now (429): "
            "try again in a few seconds"
        )
    if isinstance(error, UpstreamTimeout):
        return (
            f"Bubblehouse did not answer CustomerReferrals2 within "
            f"{settings.upstream_timeout:g}s — check BROKER_UPSTREAM_TIMEOUT"
        )
    if isinstance(error, UpstreamUnavailable):
        return "cannot reach Bubblehouse for CustomerReferrals2 — check BROKER_UPSTREAM_URL"
    return (
        "Bubblehouse answered CustomerReferrals2 with a server error or something that is not "
        "its JSON — try again later, or ask Bubblehouse"
    )


async def check_customer(
    settings: Settings, customer: str, shop: str | None = None
) -> tuple[bool, str]:
    """Read ``customer``'s referrals in ``shop`` (``--shop``; the only shop when None) once
    through the broker's upstream path: (ok, words)."""
    try:
        customer = valid_customer_id(customer, "--customer")
    except BrokerError as exc:
        return False, exc.message
    named = settings.named_shop(shop)
    if named is None:
        known = ", ".join(sorted(settings.shops.slugs))
        said = "no --shop" if shop is None else f"--shop {shop} is not one of them"
        return False, f"the configured shops are {known} ({said}): name one with --shop"
    who = Customer(named.slug, customer, None, int(time.time()) + 60)
    token = TokenMinter(settings).upstream_token(who)
    upstream = Upstream.create(settings)
    try:
        async with asyncio.timeout(settings.upstream_timeout * 2 + 2):
            body = await upstream.call(
                settings.api_versions[0],
                FUNCTION,
                {},
                token,
                request_id=f"broker-check-{secrets.token_hex(8)}",
                traceparent=None,
                retry_connect=True,
                info=CallInfo(),
                shop=who.shop,
            )
    except BrokerError as error:
        return False, judge(error, customer, settings)
    except TimeoutError:
        return False, judge(UpstreamTimeout(), customer, settings)
    finally:
        await upstream.aclose()
    return True, _answer(body, customer)
