"""What the OpenAPI document says about each route, keyed by the route's name, never its path.

The paths, methods and path parameters come from the app's routes (:func:`broker.web.app.create_app`
names every route); this module adds what a route cannot say about itself: a summary, who calls
it, the security scheme, its request body and query (declared in :mod:`broker.rules.inputs`), its
success answers and the errors it names beyond those :mod:`broker.openapi.document` infers from the
rest. CORS preflights (``OPTIONS``) are written by :mod:`broker.openapi.document` for every route
that has them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from broker.config.settings import RateLimit, Settings
from broker.errors import (
    BrokerError,
    CustomerIdentityDoesNotMatchToken,
    DeanonymizeNotAllowed,
    IdempotencyKeyReused,
    InvalidPlatformToken,
    NotFound,
    NotReady,
)
from broker.rules import inputs
from broker.rules.fields import Body, Field
from broker.rules.functions import READ, WRITE

JSON = "application/json"
Security = tuple[dict[str, list[str]], ...]
CUSTOMER: Security = ({"customerToken": []},)
ISSUER: Security = ({"issuerKey": []},)
CALL_HEADERS = ("RateLimit", "RateLimit-Policy", "Cache-Control")


@dataclass(frozen=True)
class Limit:
    """A rate limit an operation is under: its variable, its value in the settings, per what."""

    variable: str
    of: Callable[[Settings], RateLimit | None]
    per: str

    def describe(self, settings: Settings) -> str:
        limit = self.of(settings)
        if limit is None:
            return f"Rate limit: none ({self.variable}=0)."
        return (
            f"Rate limit: {limit.limit} per {limit.window} s per {self.per} "
            f"({self.variable}; `RateLimit-Policy: {limit.policy}`)."
        )


@dataclass(frozen=True)
class Operation:
    """One method of one route, as the document describes it."""

    operation_id: str
    summary: str
    tag: str
    ok: dict[str, Any]
    security: Security = ()
    errors: tuple[type[BrokerError], ...] = ()
    body: Body | None = None
    body_required: bool = True
    query: tuple[Field, ...] = ()
    header: Field | None = None
    description: str = ""
    limit: Limit | None = None
    upstream: bool = False  # calls Bubblehouse: its failures and its own 4xx ids pass through


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def header_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def json_ok(description: str, schema: dict[str, Any], *headers: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {name: header_ref(name) for name in ("X-Request-ID", *headers)},
        "content": {JSON: {"schema": schema}},
    }


def operations() -> dict[str, dict[str, Operation]]:
    """Route name -> HTTP method -> what the document says of it."""
    read_ok = {
        "200": json_ok(
            "Bubblehouse's answer, unchanged (unknown fields pass through).",
            ref("CustomerReferrals2Output"),
            "Cache-Status",
            "Vary",
            *CALL_HEADERS,
        )
    }
    read_limit = Limit("BROKER_RATE_LIMIT_READ", lambda s: s.rate_limit_read, "customer")
    issuer_limit = Limit(
        "BROKER_RATE_LIMIT_ISSUER", lambda s: s.rate_limit_issuer, "client address, failures only"
    )
    read = Operation(
        "customerReferralsGet",
        "The customer's referral history (cached)",
        "browser",
        read_ok,
        security=CUSTOMER,
        errors=(CustomerIdentityDoesNotMatchToken, DeanonymizeNotAllowed),
        query=tuple(READ.body.field(name) for name in inputs.QUERY_FIELDS),
        limit=read_limit,
        upstream=True,
    )
    token_ok = json_ok("A customer token.", ref("TokenResponse"), "Cache-Control")
    return {
        READ.name: {
            "GET": read,
            "POST": replace(
                read,
                operation_id="customerReferralsPost",
                query=(),
                body=READ.body,
                body_required=False,
            ),
        },
        WRITE.name: {
            "POST": Operation(
                "refer",
                "Send a referral",
                "browser",
                {
                    "200": json_ok(
                        "Bubblehouse's answer, unchanged.",
                        ref("Refer2Output"),
                        "Idempotent-Replayed",
                        *CALL_HEADERS,
                    )
                },
                security=CUSTOMER,
                errors=(CustomerIdentityDoesNotMatchToken, IdempotencyKeyReused),
                body=WRITE.body,
                header=inputs.IDEMPOTENCY_KEY_HEADER,
                description=(
                    "Invalidates the customer's cached referral history. A repeat with the same "
                    "Idempotency-Key by the same customer within 24 hours returns the first "
                    "answer again without calling Bubblehouse. Bubblehouse documents no Refer2 "
                    "error ids (eligibility refusals are shop-configured): the sandbox's "
                    "self_referral, invalid_channel and invalid_destination are sandbox "
                    "inventions; any lower-case id passes through with its status."
                ),
                limit=Limit("BROKER_RATE_LIMIT_WRITE", lambda s: s.rate_limit_write, "customer"),
                upstream=True,
            )
        },
        "tokens": {
            "POST": Operation(
                "mintToken",
                "Mint a customer token",
                "merchant",
                {"200": token_ok},
                security=ISSUER,
                body=inputs.TOKEN_REQUEST,
                description=(
                    "Called by the merchant's server at customer login. Repeated failed issuer "
                    "key attempts from one client address are rate limited."
                ),
                limit=issuer_limit,
            )
        },
        "invalidations": {
            "POST": Operation(
                "invalidate",
                "Drop one customer's cached referral history",
                "merchant",
                {
                    "204": {
                        "description": "Dropped (also when nothing was cached).",
                        "headers": {"X-Request-ID": header_ref("X-Request-ID")},
                    }
                },
                security=ISSUER,
                body=inputs.INVALIDATION_REQUEST,
                description=(
                    "For referrals that change outside the broker (the Bubblehouse block on "
                    "the merchant's pages, approvals, rejections): every cached version and "
                    "deanonymize variant of that customer is dropped on every instance, so the "
                    "next read goes to Bubblehouse. Server to server: no CORS headers. Failed "
                    "issuer keys are rate limited per client address; a valid key never is."
                ),
                limit=issuer_limit,
            )
        },
        "shopify_token": {
            "GET": Operation(
                "shopifyToken",
                "Mint a token for the logged-in Shopify customer (app proxy)",
                "merchant",
                {
                    "200": json_ok(
                        "A customer token, as POST /tokens answers it.",
                        ref("TokenResponse"),
                        "Cache-Control",
                    )
                },
                security=({"shopifyProxySignature": []},),
                errors=(NotFound,),
                description=(
                    "Called by a Shopify app proxy (`/apps/<prefix>/token` on the store), never "
                    "directly. Only when BROKER_SHOPIFY_SECRET and BROKER_SHOPIFY_SHOP are set "
                    "(otherwise 404). The query carries Shopify's `shop`, "
                    "`logged_in_customer_id`, `path_prefix`, `timestamp` and `signature` "
                    "(HMAC-SHA256 of the other parameters with the app's shared secret); "
                    "`timestamp` must be within 5 minutes."
                ),
            )
        },
        "bigcommerce_token": {
            "POST": Operation(
                "bigcommerceToken",
                "Exchange BigCommerce's current-customer JWT for a customer token",
                "browser",
                {
                    "200": json_ok(
                        "A customer token, as POST /tokens answers it.",
                        ref("TokenResponse"),
                        "Cache-Control",
                    )
                },
                errors=(InvalidPlatformToken, NotFound),
                body=inputs.PLATFORM_TOKEN_REQUEST,
                description=(
                    "Called by the storefront's script on a BigCommerce store, with CORS for "
                    "BROKER_CORS_ORIGINS: it fetches `/customer/current.jwt?app_client_id=<client "
                    "id>` from its own store and posts the JWT here. Only when "
                    "BROKER_BIGCOMMERCE_CLIENT_ID, BROKER_BIGCOMMERCE_CLIENT_SECRET and "
                    "BROKER_BIGCOMMERCE_STORE_HASH are set (otherwise 404). The JWT must be "
                    "HS256 with the client secret, `iss` bc/apps, `aud` the client id, "
                    "`store_hash` and `sub` the store hash, `operation` current_customer, `exp` "
                    "in the future and at most 1 hour after `iat`, and name `customer.id`; the "
                    "token minted is for that id, with `customer.email` as `ce`. A refusal is "
                    "401 invalid_platform_token with its `reason`. Refused tokens count against "
                    "the client address's failed-credential limit; a valid token never does."
                ),
                limit=issuer_limit,
            )
        },
        "healthz": {
            "GET": Operation(
                "healthz",
                "Liveness: the process answers (no I/O)",
                "operations",
                {"200": json_ok("Alive.", ref("Health"))},
            )
        },
        "readyz": {
            "GET": Operation(
                "readyz",
                "Readiness, with the state of the Redis store",
                "operations",
                {
                    "200": json_ok(
                        "Ready (also when Redis is down: the broker serves).", ref("Ready")
                    )
                },
                errors=(NotReady,),
            )
        },
        "metrics": {
            "GET": Operation(
                "metrics",
                "Prometheus metrics",
                "operations",
                {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "headers": {"X-Request-ID": header_ref("X-Request-ID")},
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                security=({}, {"metricsToken": []}),
                description="Needs the BROKER_METRICS_TOKEN bearer token when one is set.",
            )
        },
        "openapi": {
            "GET": Operation(
                "openapi",
                "This document",
                "operations",
                {"200": json_ok("The OpenAPI description.", {"type": "object"})},
            )
        },
    }
