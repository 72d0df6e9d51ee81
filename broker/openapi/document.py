"""The broker's OpenAPI 3.1 description, built from the code.

- Paths, methods and path parameters: the app's own routes. Each route is named, and
  :func:`broker.openapi._operations.operations` says what the document adds about it by that
  name; a route without a description, or a described route the app lacks, fails the build.
- Request bodies, query and header parameters: the declarations of :mod:`broker.rules.inputs`, the
  same ones that validate requests.
- Error answers: classes of the error catalogue (:mod:`broker.errors`), grouped by their status,
  each with the one problem+json schema and an example rendered by the one renderer. What an
  operation can refuse follows from what it takes (path parameters, a body, a token, a limit,
  a call to Bubblehouse), plus the errors it names.
- Numbers: the settings (configured versions and shop, token lifetimes, rate limits).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Route

from broker.config.settings import Settings
from broker.config.values import SHOP_RE
from broker.errors import (
    CATALOGUE,
    BrokerError,
    CustomerIdentityDoesNotMatchToken,
    CustomerNotLoggedIn,
    InternalError,
    InvalidGlobalApiVersion,
    InvalidInput,
    InvalidIssuerKey,
    InvalidJson,
    InvalidProxySignature,
    InvalidToken,
    MethodNotAllowed,
    MissingToken,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RateLimitExceeded,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamTimeout,
    UpstreamUnavailable,
    problem_body,
)
from broker.openapi._operations import JSON, Operation, header_ref, operations, ref
from broker.openapi._schemas import body_schemas, headers, problem_schema
from broker.rules.fields import Body, Field
from broker.rules.inputs import CUSTOMER
from broker.web import cors

OPENAPI_VERSION = "3.1.0"
PROBLEM = "application/problem+json"
# Every error the document can name, and the example body of each.
DOCUMENTED: tuple[type[BrokerError], ...] = (
    *CATALOGUE,
    InvalidProxySignature,
    CustomerNotLoggedIn,
    NotReady,
)
ALWAYS = (MethodNotAllowed, InternalError)
BODY = (InvalidInput, InvalidJson, PayloadTooLarge, UnsupportedMediaType)
UPSTREAM = (
    RateLimitExceeded,
    UpstreamMisconfigured,
    UpstreamError,
    UpstreamUnavailable,
    UpstreamTimeout,
)
# What a path parameter can be refused with, and what the document says of it.
PATH_PARAMETERS: dict[str, tuple[type[BrokerError], str]] = {
    "version": (
        InvalidGlobalApiVersion,
        "A global Bubblehouse API version this broker is configured for.",
    ),
    "shop": (NotFound, "The shop slug this broker serves."),
}
SCHEME_ERRORS: dict[str, tuple[type[BrokerError], ...]] = {
    "customerToken": (MissingToken, InvalidToken),
    "issuerKey": (InvalidIssuerKey,),
    "metricsToken": (MissingToken,),
    "shopifyProxySignature": (InvalidProxySignature, CustomerNotLoggedIn),
}
# Bubblehouse's own 4xx ids are passed through with its status (spec 4).
PASSTHROUGH_STATUSES = (400, 403, 404)


def example_error(cls: type[BrokerError]) -> BrokerError:
    """An instance of an error class, as the document's example of it."""
    if issubclass(cls, InvalidToken):
        return cls("expired")
    if cls is InvalidInput:
        return InvalidInput("channel")
    if issubclass(cls, RateLimitExceeded):
        return cls(30)
    return cls()


def _error_responses(
    errors: Iterable[type[BrokerError]], *, passthrough: bool = False
) -> dict[str, Any]:
    """One response per status, each with the problem schema narrowed to its ids."""
    by_status: dict[int, list[type[BrokerError]]] = {}
    for cls in dict.fromkeys(errors):
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
        headers: dict[str, Any] = {"X-Request-ID": header_ref("X-Request-ID")}
        if status == 401:
            headers["WWW-Authenticate"] = header_ref("WWW-Authenticate")
        if status == 405:
            headers["Allow"] = header_ref("Allow")
        if status == 429:
            headers["Retry-After"] = header_ref("Retry-After")
        if status == 429 or passthrough:
            headers["RateLimit"] = header_ref("RateLimit")
            headers["RateLimit-Policy"] = header_ref("RateLimit-Policy")
        responses[str(status)] = {
            "description": "\n".join(f"- {line}" for line in lines),
            "headers": headers,
            "content": {
                PROBLEM: {
                    "schema": {"allOf": [ref("Problem")], "properties": narrowed},
                    "examples": {
                        cls.id: {"$ref": f"#/components/examples/{cls.id}"} for cls in classes
                    },
                }
            },
        }
    if passthrough:
        responses["4XX"] = {
            "description": "One of Bubblehouse's own 4xx ids, passed through with its status.",
            "headers": {"X-Request-ID": header_ref("X-Request-ID")},
            "content": {PROBLEM: {"schema": ref("Problem")}},
        }
    return responses


def _errors(route: Route, operation: Operation) -> list[type[BrokerError]]:
    """The errors an operation can answer with: inferred from what it takes, plus its own."""
    found: list[type[BrokerError]] = [PATH_PARAMETERS[p][0] for p in route.param_convertors]
    for requirement in operation.security:
        for scheme in requirement:
            found += SCHEME_ERRORS[scheme]
    if operation.query or operation.header is not None:
        found.append(InvalidInput)
    if operation.body is not None:
        found += BODY
        if CUSTOMER in operation.body.fields:
            found.append(CustomerIdentityDoesNotMatchToken)
    if operation.limit is not None:
        found.append(RateLimitExceeded)
    if operation.upstream:
        found += UPSTREAM
    return [*found, *operation.errors, *ALWAYS]


def _parameter_schema(spec: Field) -> dict[str, Any]:
    """A query or header parameter's schema: present means a value (never null)."""
    schema = {**spec.schema(), "type": spec.kind.value}
    schema.pop("description", None)  # said once, by the parameter
    return schema


def _operation(route: Route, operation: Operation, settings: Settings) -> dict[str, Any]:
    described: dict[str, Any] = {
        "tags": [operation.tag],
        "summary": operation.summary,
        "operationId": operation.operation_id,
    }
    text = [operation.description] if operation.description else []
    if operation.limit is not None:
        text.append(operation.limit.describe(settings))
    if text:
        described["description"] = " ".join(text)
    described["security"] = list(operation.security)
    parameters = [
        {
            "name": spec.name,
            "in": where,
            "required": False,
            "description": spec.description,
            "schema": _parameter_schema(spec),
        }
        for where, specs in (("query", operation.query), ("header", (operation.header,)))
        for spec in specs
        if spec is not None
    ]
    if parameters:
        described["parameters"] = parameters
    if operation.body is not None:
        described["requestBody"] = {
            "required": operation.body_required,
            "content": {JSON: {"schema": ref(operation.body.name)}},
        }
    errors = _error_responses(_errors(route, operation), passthrough=operation.upstream)
    described["responses"] = {**operation.ok, **errors}
    return described


def _preflight(route: Route) -> dict[str, Any]:
    """The CORS preflight of a route that answers OPTIONS (see :mod:`broker.web.cors`)."""
    return {
        "tags": ["browser"],
        "summary": f"CORS preflight for {route.name}",
        "operationId": f"preflight{route.name}",
        "description": (
            "Answered by the broker without a token. For an origin in BROKER_CORS_ORIGINS the "
            f"answer allows the methods {cors.allowed_methods(route)} and the request headers "
            f"{cors.ALLOW_HEADERS.decode()}; other origins get no CORS headers."
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
                    name: header_ref(name)
                    for name in (
                        "X-Request-ID",
                        "Access-Control-Allow-Origin",
                        "Access-Control-Allow-Methods",
                        "Access-Control-Allow-Headers",
                    )
                },
            },
            **_error_responses([*(PATH_PARAMETERS[p][0] for p in route.param_convertors), *ALWAYS]),
        },
    }


def _path_parameters(route: Route, settings: Settings) -> list[dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {
        "version": {"type": "string", "enum": list(settings.api_versions)},
        # One shop is named; several are not listed (a shop's clients never learn the others).
        "shop": (
            {"type": "string", "enum": [settings.first_shop.slug]}
            if len(settings.shops) == 1
            else {"type": "string", "pattern": SHOP_RE.pattern}
        ),
    }
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": PATH_PARAMETERS[name][1],
            "schema": schemas[name],
        }
        for name in route.param_convertors
    ]


def described_routes(routes: Sequence[BaseRoute]) -> list[Route]:
    """The routes the document describes: all but mounts (the static client files)."""
    return [route for route in routes if isinstance(route, Route)]


def _paths(settings: Settings, routes: Sequence[BaseRoute]) -> dict[str, Any]:
    described = operations()
    paths: dict[str, Any] = {}
    for route in described_routes(routes):
        if route.name not in described:
            raise LookupError(f"route {route.name!r} ({route.path}) has no OpenAPI description")
        by_method = described.pop(route.name)
        item: dict[str, Any] = {}
        if route.param_convertors:
            item["parameters"] = _path_parameters(route, settings)
        for method in cors.METHOD_ORDER:
            if method not in (route.methods or ()):
                continue
            if method == "OPTIONS":
                item["options"] = _preflight(route)
            elif method not in by_method:
                raise LookupError(f"route {route.name!r} answers {method}, undescribed")
            else:
                item[method.lower()] = _operation(route, by_method.pop(method), settings)
        if by_method:
            raise LookupError(f"route {route.name!r} lacks the described methods {list(by_method)}")
        paths[route.path] = item
    if described:
        raise LookupError(f"described routes the app does not have: {sorted(described)}")
    return paths


def _bodies(found: Iterable[Body]) -> dict[str, Body]:
    """Every body the operations take, and the bodies nested in them, by schema name."""
    bodies: dict[str, Body] = {}
    pending = list(found)
    while pending:
        body = pending.pop(0)
        bodies.setdefault(body.name, body)
        pending += [spec.body for spec in body.fields if spec.body is not None]
    return bodies


def _schemas(settings: Settings) -> dict[str, Any]:
    """The problem, the request bodies as declared, and the answers, with the settings' numbers."""
    taken = [op.body for ops in operations().values() for op in ops.values() if op.body]
    inputs = {name: body.schema() for name, body in sorted(_bodies(taken).items())}
    ttl = inputs["TokenRequest"]["properties"]["ttl"]
    ttl["description"] += (
        f" Here at most {settings.token_max_ttl} s; {settings.token_ttl} s when left out."
    )
    answers = body_schemas()
    answers["TokenResponse"]["properties"]["expires_in"]["maximum"] = settings.token_max_ttl
    return {"Problem": problem_schema(), **inputs, **answers}


def _examples() -> dict[str, Any]:
    """One example body per error id, rendered by the broker's own renderer."""
    return {
        cls.id: {
            "summary": cls.title,
            "value": problem_body(example_error(cls), "3f1c0a9e7b2d4c6f"),
        }
        for cls in DOCUMENTED
    }


def openapi_document(settings: Settings, routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI description of these routes of the broker, for these settings."""
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
        "paths": _paths(settings, routes),
        "components": {
            "schemas": _schemas(settings),
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
