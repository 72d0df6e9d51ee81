"""The broker's OpenAPI 3.1 description, built from the settings and the error catalogue.

:func:`openapi_document` describes every route of the contract (spec section 3): the path
parameters carry the configured API versions and shop as enums, and every operation lists the
error answers it can give, with the one problem+json schema, built from
:data:`broker.errors.CATALOGUE` so that a new error class cannot be left undocumented.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from broker.errors import (
    CATALOGUE,
    BrokerError,
    CustomerNotLoggedIn,
    InvalidInput,
    InvalidProxySignature,
    InvalidToken,
    RateLimitExceeded,
    problem_body,
)
from broker.openapi_schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    body_schemas,
    headers,
    problem_schema,
)
from broker.settings import Settings

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
PROBLEM = "application/problem+json"
READ = "CustomerReferrals2"
WRITE = "Refer2"
API_PATH = "/api/{version}/{shop}/"

# The catalogue (browser-facing), plus the refusals of the Shopify app proxy route.
DOCUMENTED: tuple[type[BrokerError], ...] = (*CATALOGUE, InvalidProxySignature, CustomerNotLoggedIn)
BY_ID: dict[str, type[BrokerError]] = {error.id: error for error in DOCUMENTED}

# Error ids each kind of operation can answer with (besides Bubblehouse's own, see below).
ALWAYS = ("method_not_allowed", "internal_error")
BODY = ("invalid_json", "payload_too_large", "unsupported_media_type")
CALL = (
    "missing_token",
    "invalid_token",
    "invalid_global_api_version",
    "invalid_input",
    "not_found",
    "customer_identity_does_not_match_token",
    "rate_limit_exceeded",
    "upstream_misconfigured",
    "upstream_error",
    "upstream_unavailable",
    "upstream_timeout",
    *ALWAYS,
)
# Bubblehouse's own 4xx ids are passed through with its status (spec 4).
PASSTHROUGH_STATUSES = (400, 403, 404)
CALL_HEADERS = ("RateLimit", "RateLimit-Policy", "Cache-Control")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _example_error(cls: type[BrokerError]) -> BrokerError:
    if cls is InvalidToken:
        return InvalidToken("expired")
    if cls is InvalidInput:
        return InvalidInput("channel")
    if issubclass(cls, RateLimitExceeded):
        return cls(30)
    return cls()


def _error_responses(ids: Iterable[str], *, passthrough: bool = False) -> dict[str, Any]:
    """One response per status, each with the problem schema narrowed to its ids."""
    by_status: dict[int, list[type[BrokerError]]] = {}
    for error_id in ids:
        cls = BY_ID[error_id]
        by_status.setdefault(cls.status, []).append(cls)
    responses: dict[str, Any] = {}
    for status in sorted(by_status):
        classes = by_status[status]
        lines = [f"`{cls.id}`: {cls.default_message}" for cls in classes]
        narrowed: dict[str, Any] = {"status": {"const": status}}
        if passthrough and status in PASSTHROUGH_STATUSES:
            lines.append("or one of Bubblehouse's own ids, passed through with its status")
        else:
            narrowed["id"] = {"enum": [cls.id for cls in classes]}
        headers: dict[str, Any] = {"X-Request-ID": _header("X-Request-ID")}
        if status == 401:
            headers["WWW-Authenticate"] = _header("WWW-Authenticate")
        if status == 405:
            headers["Allow"] = _header("Allow")
        if status == 429:
            headers["Retry-After"] = _header("Retry-After")
        if status == 429 or passthrough:
            headers["RateLimit"] = _header("RateLimit")
            headers["RateLimit-Policy"] = _header("RateLimit-Policy")
        responses[str(status)] = {
            "description": "\n".join(f"- {line}" for line in lines),
            "headers": headers,
            "content": {
                PROBLEM: {
                    "schema": {"allOf": [_ref("Problem")], "properties": narrowed},
                    "examples": {
                        cls.id: {"$ref": f"#/components/examples/{cls.id}"} for cls in classes
                    },
                }
            },
        }
    if passthrough:
        responses["4XX"] = {
            "description": "One of Bubblehouse's own 4xx ids, passed through with its status.",
            "headers": {"X-Request-ID": _header("X-Request-ID")},
            "content": {PROBLEM: {"schema": _ref("Problem")}},
        }
    return responses


def _json_ok(description: str, schema: dict[str, Any], *headers: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {name: _header(name) for name in ("X-Request-ID", *headers)},
        "content": {JSON: {"schema": schema}},
    }


def _api_parameters(settings: Settings) -> list[dict[str, Any]]:
    return [
        {
            "name": "version",
            "in": "path",
            "required": True,
            "description": "A global Bubblehouse API version this broker is configured for.",
            "schema": {"type": "string", "enum": list(settings.api_versions)},
        },
        {
            "name": "shop",
            "in": "path",
            "required": True,
            "description": "The shop slug this broker serves.",
            "schema": {"type": "string", "enum": [settings.shop]},
        },
    ]


def _preflight(function: str) -> dict[str, Any]:
    return {
        "tags": ["browser"],
        "summary": f"CORS preflight for {function}",
        "operationId": f"preflight{function}",
        "description": (
            "Answered by the broker without a token. For an origin in BROKER_CORS_ORIGINS the "
            "answer allows the methods and the request headers Authorization, Content-Type, "
            "Idempotency-Key, X-Request-ID and traceparent; other origins get no CORS headers."
        ),
        "security": [],
        "parameters": [
            {"name": "Origin", "in": "header", "required": False, "schema": {"type": "string"}},
            {
                "name": "Access-Control-Request-Method",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "204": {
                "description": "Preflight answered.",
                "headers": {
                    "X-Request-ID": _header("X-Request-ID"),
                    "Access-Control-Allow-Origin": _header("Access-Control-Allow-Origin"),
                    "Access-Control-Allow-Methods": _header("Access-Control-Allow-Methods"),
                    "Access-Control-Allow-Headers": _header("Access-Control-Allow-Headers"),
                },
            },
            **_error_responses(("invalid_global_api_version", "not_found", *ALWAYS)),
        },
    }


def _paths(settings: Settings) -> dict[str, Any]:
    customer: list[dict[str, list[str]]] = [{"customerToken": []}]
    api_parameters = _api_parameters(settings)
    read_ok = _json_ok(
        "Bubblehouse's answer, unchanged (unknown fields pass through).",
        _ref("CustomerReferrals2Output"),
        "Cache-Status",
        "Vary",
        *CALL_HEADERS,
    )
    read_errors = _error_responses((*CALL, "deanonymize_not_allowed"), passthrough=True)
    return {
        "/tokens": {
            "post": {
                "tags": ["merchant"],
                "summary": "Mint a customer token",
                "operationId": "mintToken",
                "description": (
                    "Called by the merchant's server at customer login. Repeated failed issuer "
                    "key attempts from one client address are rate limited."
                ),
                "security": [{"issuerKey": []}],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("TokenRequest")}},
                },
                "responses": {
                    "200": _json_ok(
                        "A customer token.",
                        _ref("TokenResponse"),
                        "Cache-Control",
                    ),
                    **_error_responses(
                        (
                            "invalid_input",
                            "invalid_issuer_key",
                            "rate_limit_exceeded",
                            *BODY,
                            *ALWAYS,
                        )
                    ),
                },
            }
        },
        "/invalidations": {
            "post": {
                "tags": ["merchant"],
                "summary": "Drop one customer's cached referral history",
                "operationId": "invalidate",
                "description": (
                    "For referrals that change outside the broker (the Bubblehouse block on "
                    "the merchant's pages, approvals, rejections): every cached version and "
                    "deanonymize variant of that customer is dropped on every instance, so the "
                    "next read goes to Bubblehouse. Server to server: no CORS headers. Failed "
                    "issuer keys are rate limited per client address; a valid key never is."
                ),
                "security": [{"issuerKey": []}],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("InvalidationRequest")}},
                },
                "responses": {
                    "204": {
                        "description": "Dropped (also when nothing was cached).",
                        "headers": {"X-Request-ID": _header("X-Request-ID")},
                    },
                    **_error_responses(
                        (
                            "invalid_input",
                            "invalid_issuer_key",
                            "rate_limit_exceeded",
                            *BODY,
                            *ALWAYS,
                        )
                    ),
                },
            }
        },
        API_PATH + READ: {
            "parameters": api_parameters,
            "get": {
                "tags": ["browser"],
                "summary": "The customer's referral history (cached)",
                "operationId": "customerReferralsGet",
                "security": customer,
                "parameters": [
                    {
                        "name": "deanonymize",
                        "in": "query",
                        "required": False,
                        "description": "true is refused for customer tokens.",
                        "schema": {"type": "boolean"},
                    }
                ],
                "responses": {"200": read_ok, **read_errors},
            },
            "post": {
                "tags": ["browser"],
                "summary": "The customer's referral history (cached)",
                "operationId": "customerReferralsPost",
                "security": customer,
                "requestBody": {
                    "required": False,
                    "content": {JSON: {"schema": _ref("CustomerReferrals2Input")}},
                },
                "responses": {
                    "200": read_ok,
                    **_error_responses((*CALL, *BODY, "deanonymize_not_allowed"), passthrough=True),
                },
            },
            "options": _preflight(READ),
        },
        API_PATH + WRITE: {
            "parameters": api_parameters,
            "post": {
                "tags": ["browser"],
                "summary": "Send a referral",
                "operationId": "refer",
                "description": (
                    "Invalidates the customer's cached referral history. A repeat with the same "
                    "Idempotency-Key by the same customer within 24 hours returns the first "
                    "answer again without calling Bubblehouse. Bubblehouse documents no Refer2 "
                    "error ids (eligibility refusals are shop-configured): the sandbox's "
                    "self_referral, invalid_channel and invalid_destination are sandbox "
                    "inventions; any lower-case id passes through with its status."
                ),
                "security": customer,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("Refer2Input")}},
                },
                "responses": {
                    "200": _json_ok(
                        "Bubblehouse's answer, unchanged.",
                        _ref("Refer2Output"),
                        "Idempotent-Replayed",
                        *CALL_HEADERS,
                    ),
                    **_error_responses((*CALL, *BODY, "idempotency_key_reused"), passthrough=True),
                },
            },
            "options": _preflight(WRITE),
        },
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "summary": "Liveness: the process answers (no I/O)",
                "operationId": "healthz",
                "security": [],
                "responses": {
                    "200": _json_ok("Alive.", _ref("Health")),
                    **_error_responses(ALWAYS),
                },
            }
        },
        "/readyz": {
            "get": {
                "tags": ["operations"],
                "summary": "Readiness, with the state of the Redis store",
                "operationId": "readyz",
                "security": [],
                "responses": {
                    "200": _json_ok(
                        "Ready (also when Redis is down: the broker serves).", _ref("Ready")
                    ),
                    "503": _json_ok("Starting or stopping.", _ref("Ready")),
                    **_error_responses(ALWAYS),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["operations"],
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "description": "Needs the BROKER_METRICS_TOKEN bearer token when one is set.",
                "security": [{}, {"metricsToken": []}],
                "responses": {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "headers": {"X-Request-ID": _header("X-Request-ID")},
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_error_responses(("missing_token", *ALWAYS)),
                },
            }
        },
        "/shopify/token": {
            "get": {
                "tags": ["merchant"],
                "summary": "Mint a token for the logged-in Shopify customer (app proxy)",
                "operationId": "shopifyToken",
                "description": (
                    "Called by a Shopify app proxy (`/apps/<prefix>/token` on the store), never "
                    "directly. Only when BROKER_SHOPIFY_SECRET and BROKER_SHOPIFY_SHOP are set "
                    "(otherwise 404). The query carries Shopify's `shop`, "
                    "`logged_in_customer_id`, `path_prefix`, `timestamp` and `signature` "
                    "(HMAC-SHA256 of the other parameters with the app's shared secret); "
                    "`timestamp` must be within 5 minutes."
                ),
                "security": [{"shopifyProxySignature": []}],
                "responses": {
                    "200": _json_ok(
                        "A customer token, as POST /tokens answers it.",
                        _ref("TokenResponse"),
                        "Cache-Control",
                    ),
                    **_error_responses(
                        ("invalid_proxy_signature", "customer_not_logged_in", "not_found", *ALWAYS)
                    ),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["operations"],
                "summary": "This document",
                "operationId": "openapi",
                "security": [],
                "responses": {
                    "200": _json_ok("The OpenAPI description.", {"type": "object"}),
                    **_error_responses(ALWAYS),
                },
            }
        },
    }


def _examples() -> dict[str, Any]:
    """One example body per error id, rendered by the broker's own renderer."""
    return {
        cls.id: {
            "summary": cls.title,
            "value": problem_body(_example_error(cls), "3f1c0a9e7b2d4c6f"),
        }
        for cls in DOCUMENTED
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI description of every route of the broker, for these settings."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Referral broker",
            "version": "1.0.0",
            "description": (
                "A token broker in front of Bubblehouse's CustomerReferrals2 and Refer2 calls, "
                "with the same URL layout. Every answer that is not 2xx is "
                "application/problem+json with `id`, `message` and `request_id`. Bubblehouse's "
                "answers pass through unchanged; where the development sandbox answers with "
                "shapes Bubblehouse does not document (the share_action union, a summary "
                "object, self_referral, newest-first order, the masking format, its ids), "
                "those are the sandbox's inventions, marked as such below."
            ),
        },
        "tags": [
            {"name": "merchant", "description": "Called by the merchant's server."},
            {"name": "browser", "description": "Called by the storefront with a customer token."},
            {"name": "operations", "description": "Health, readiness, metrics, this document."},
        ],
        "paths": _paths(settings),
        "components": {
            "schemas": {"Problem": problem_schema(), **body_schemas()},
            "headers": headers(),
            "examples": _examples(),
            "securitySchemes": {
                "customerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A customer token minted by POST /tokens.",
                },
                "issuerKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of BROKER_ISSUER_KEYS.",
                },
                "shopifyProxySignature": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "signature",
                    "description": "The Shopify app proxy's signature of the query.",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "BROKER_METRICS_TOKEN, when set.",
                },
            },
        },
    }
