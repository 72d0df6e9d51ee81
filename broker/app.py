"""The app factory: routes, middleware and the resources of one broker process.

``create_app(settings)`` builds everything; nothing happens at import. Resources (the upstream
client, the store) are opened in the lifespan and reach handlers through :class:`Services`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import orjson
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from broker import inputs
from broker.cache import CacheKey, ReferralCache
from broker.cors import CORSMiddleware
from broker.errors import (
    BrokerError,
    InternalError,
    InvalidGlobalApiVersion,
    InvalidInput,
    InvalidIssuerKey,
    InvalidToken,
    MethodNotAllowed,
    MissingToken,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RateLimitExceeded,
    UpstreamRateLimited,
    problem_body,
)
from broker.idempotency import Idempotency, StoredResponse
from broker.limits import Limiter
from broker.logs import customer_hash, hash_key
from broker.metrics import Metrics
from broker.openapi import openapi_document
from broker.responses import JSONBytesResponse, problem_response
from broker.settings import Settings
from broker.store import Store, customer_scope, open_store
from broker.telemetry import RequestInfo, TelemetryMiddleware, request_info
from broker.tokens import Customer, TokenMinter, TokenVerifier
from broker.tracing import Tracing
from broker.upstream import CallInfo, Upstream

log = structlog.get_logger("broker.app")

READ = "CustomerReferrals2"
WRITE = "Refer2"
API_ROUTE = "/api/{version}/{shop}/{function}"
REFERRAL_HEADERS = {"Cache-Control": "private, no-store", "Vary": "Authorization, Origin"}


@dataclass
class Services:
    """Everything a handler needs, created once per process."""

    settings: Settings
    minter: TokenMinter
    verifier: TokenVerifier
    metrics: Metrics
    log_key: bytes
    upstream: Upstream | None = None
    store: Store | None = None
    cache: ReferralCache | None = None
    limiter: Limiter | None = None
    idempotency: Idempotency | None = None
    tracing: Tracing | None = None  # None when span export is off
    ready: bool = False
    openapi: bytes | None = None  # rendered on first request, then served as is


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


Handler = Callable[[Request, Services, RequestInfo], Awaitable[Response]]


def endpoint(route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: record its route, and turn every failure into a problem response."""

    async def run(request: Request) -> Response:
        info = request_info(request.scope)
        info.route = route
        try:
            return await handler(request, services(request), info)
        except BrokerError as error:
            info.error_id = error.error_id
            return problem_response(error, info.request_id)
        except Exception:
            log.exception("request.internal_error", request_id=info.request_id, route=route)
            info.error_id = InternalError.id
            return problem_response(InternalError(), info.request_id)

    return run


def bearer(request: Request) -> str | None:
    """The bearer credential of the one ``Authorization`` header, or None if there is none."""
    values = request.headers.getlist("authorization")
    if not values:
        return None
    if len(values) > 1:
        raise InvalidToken("malformed", "Send exactly one Authorization header.")
    scheme, _, credential = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


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
    raw = await read_body(request)
    inputs.check_content_type(request.headers.get("content-type"), bool(raw))
    return inputs.decode_object(raw)


# --- POST /tokens -------------------------------------------------------------------------


async def mint_token(request: Request, svc: Services, info: RequestInfo) -> Response:
    settings = svc.settings
    assert svc.limiter is not None
    try:
        presented = bearer(request)
    except InvalidToken:
        presented = None
    # Compare against every key, always, so timing says nothing about which one is close.
    matched = False
    for key in settings.issuer_keys:
        matched |= presented is not None and hmac.compare_digest(
            presented.encode(), key.reveal().encode()
        )
    if not matched:
        # Only failures are counted and refused (429 once over the limit): a valid key is
        # always served, so guesses from a shared address never lock out the merchant's server.
        client = request.client.host if request.client else "unknown"
        await svc.limiter.hit("issuer", client, settings.rate_limit_issuer)
        raise InvalidIssuerKey()
    wanted = inputs.token_request(await json_body(request))
    minted = svc.minter.customer_token(wanted.customer_id, wanted.email, wanted.ttl)
    info.customer = customer_hash(svc.log_key, wanted.customer_id)
    return JSONBytesResponse(
        {
            "token": minted.token,
            "token_type": "Bearer",
            "expires_in": minted.expires_in,
            "expires_at": minted.expires_at_rfc3339,
        },
        headers={"Cache-Control": "no-store"},
    )


# --- /api/<version>/<shop>/<function> ------------------------------------------------------


async def api_call(request: Request, svc: Services, info: RequestInfo) -> Response:
    params = request.path_params
    function, version, shop = params["function"], params["version"], params["shop"]
    if function not in (READ, WRITE) or shop != svc.settings.shop:
        info.route = "unmatched"
        raise NotFound()
    info.route = f"/api/{{version}}/{{shop}}/{function}"
    if version not in svc.settings.api_versions:
        raise InvalidGlobalApiVersion()
    method = request.method
    allowed = ("GET", "POST", "OPTIONS") if function == READ else ("POST", "OPTIONS")
    if method == "OPTIONS":
        return Response(status_code=204, headers={"Allow": ", ".join(allowed)})
    if method not in allowed:
        raise MethodNotAllowed(allowed)
    customer = authenticate(request, svc)
    info.customer = customer_hash(svc.log_key, customer.id)
    if function == READ:
        return await read_referrals(request, svc, info, customer, version)
    return await send_referral(request, svc, info, customer, version)


def authenticate(request: Request, svc: Services) -> Customer:
    token = bearer(request)
    if token is None:
        raise MissingToken()
    return svc.verifier.verify(token)


async def call_upstream(
    svc: Services,
    info: RequestInfo,
    customer: Customer,
    version: str,
    function: str,
    payload: dict[str, Any],
) -> bytes:
    assert svc.upstream is not None
    call = CallInfo()
    tracing, span, traceparent = svc.tracing, None, info.traceparent
    if tracing is not None:
        span, traceparent = tracing.start_upstream(info.span, function)
    try:
        return await svc.upstream.call(
            version,
            function,
            payload,
            svc.minter.upstream_token(customer),
            request_id=info.request_id,
            traceparent=traceparent,
            retry_connect=True,
            info=call,
        )
    finally:
        if span is not None:
            assert tracing is not None
            tracing.end_upstream(span, call.status, call.outcome)
        info.upstream_status = call.status
        info.upstream_ms = round(call.seconds * 1000, 2)
        svc.metrics.observe_upstream(
            function=function, outcome=call.outcome, status=call.status, seconds=call.seconds
        )


async def read_referrals(
    request: Request, svc: Services, info: RequestInfo, customer: Customer, version: str
) -> Response:
    assert svc.cache is not None
    if request.method == "GET":
        data = inputs.referrals_query(request.query_params.multi_items())
    else:
        if request.query_params:
            name = next(iter(request.query_params))
            raise InvalidInput(name, f"Unknown query parameter '{name}'.")
        data = await json_body(request)
    payload = inputs.referrals_input(data, customer)
    key = CacheKey(version, svc.settings.shop, customer.id, False)

    async def load() -> bytes:
        return await call_upstream(svc, info, customer, version, READ, payload)

    try:
        served = await svc.cache.read(key, load, limit=svc.settings.rate_limit_read)
    except BrokerError as error:
        if isinstance(error, RateLimitExceeded) and not isinstance(error, UpstreamRateLimited):
            svc.metrics.count_rate_limited("read")  # the broker's own limit, not Bubblehouse's
        raise
    info.cache = served.outcome
    svc.metrics.count_cache(served.outcome)
    headers = {**REFERRAL_HEADERS, "Cache-Status": served.cache_status}
    if served.rate is not None:
        headers.update(served.rate.headers())
    return JSONBytesResponse(served.body, headers=headers)


async def send_referral(
    request: Request, svc: Services, info: RequestInfo, customer: Customer, version: str
) -> Response:
    assert svc.idempotency is not None and svc.limiter is not None and svc.cache is not None
    key = inputs.idempotency_key(request.headers.getlist("idempotency-key"))
    data = await json_body(request)
    payload = inputs.refer_input(data, customer)
    cache, limiter = svc.cache, svc.limiter
    scope = customer_scope(customer.shop, customer.id)
    rate_headers: dict[str, str] = {}

    async def action() -> StoredResponse:
        try:
            decision = await limiter.hit("write", scope, svc.settings.rate_limit_write)
        except BrokerError as error:
            if error.status_code == 429:
                svc.metrics.count_rate_limited("write")
            raise
        if decision is not None:
            rate_headers.update(decision.headers())
        try:
            body = await call_upstream(svc, info, customer, version, WRITE, payload)
        except BrokerError as error:
            if not error.reached_upstream or isinstance(error, UpstreamRateLimited):
                # Never sent (or refused unprocessed by Bubblehouse's limit): free the key.
                raise
            # Bubblehouse may have sent it: forget the cached history, and remember the answer.
            await cache.invalidate(customer.shop, customer.id)
            info.error_id = error.error_id
            return StoredResponse(
                error.status_code,
                {"Content-Type": "application/problem+json", **error.headers()},
                orjson.dumps(problem_body(error, info.request_id)),
            )
        await cache.invalidate(customer.shop, customer.id)
        return StoredResponse(200, {"Content-Type": "application/json"}, body)

    if key is None:
        stored, replayed = await action(), False
    else:
        stored, replayed = await svc.idempotency.run(scope, key, inputs.fingerprint(data), action)
    headers = {**stored.headers, "Cache-Control": "no-store"}
    headers.update(rate_headers)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    media_type = headers.pop("Content-Type", "application/json")
    return Response(stored.body, status_code=stored.status, headers=headers, media_type=media_type)


# --- operations -----------------------------------------------------------------------------


async def healthz(request: Request, svc: Services, info: RequestInfo) -> Response:
    return JSONBytesResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: Request, svc: Services, info: RequestInfo) -> Response:
    redis = svc.store.state if svc.store is not None else "memory"
    if not (svc.ready and svc.upstream is not None):
        raise NotReady()
    return JSONBytesResponse(
        {"status": "ready", "redis": redis}, headers={"Cache-Control": "no-store"}
    )


async def metrics(request: Request, svc: Services, info: RequestInfo) -> Response:
    token = svc.settings.metrics_token
    if token is not None:
        presented = bearer(request)
        if presented is None or not hmac.compare_digest(
            presented.encode(), token.reveal().encode()
        ):
            raise MissingToken("/metrics needs the metrics bearer token.")
    body, content_type = svc.metrics.render()
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


async def openapi(request: Request, svc: Services, info: RequestInfo) -> Response:
    if svc.openapi is None:
        svc.openapi = orjson.dumps(openapi_document(svc.settings))
    return JSONBytesResponse(svc.openapi)


# --- assembly -----------------------------------------------------------------------------


async def http_exception(request: Request, exc: Exception) -> Response:
    """The framework's own 404 and 405, in the broker's error shape."""
    info = request_info(request.scope)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error: BrokerError
    if status == 404:
        error = NotFound()
    elif status == 405:
        headers = exc.headers if isinstance(exc, HTTPException) else None
        allow = (headers or {}).get("Allow", "")
        error = MethodNotAllowed(tuple(m.strip() for m in allow.split(",") if m.strip()))
    else:
        error = InternalError()
    info.error_id = error.error_id
    return problem_response(error, info.request_id)


def watch(upstream: Upstream, store: Store, metrics: Metrics) -> None:
    """Feed the breakers' states and Redis round-trip times to the metrics."""
    upstream.breaker.on_change = lambda state: metrics.set_breaker("upstream", state)
    metrics.set_breaker("upstream", upstream.breaker.state)
    if store.state == "memory":
        return

    def redis_state(state: str) -> None:
        metrics.set_breaker("redis", "closed" if state == "up" else "open")

    store.on_state_change(redis_state)
    redis_state(store.state)
    store.timing = lambda op, seconds: metrics.observe_redis(operation=op, seconds=seconds)


def create_app(
    settings: Settings,
    *,
    upstream_transport: httpx2.AsyncBaseTransport | None = None,
    store: Store | None = None,
    metrics_registry: Metrics | None = None,
    tracing: Tracing | None = None,
) -> Starlette:
    """Build a broker app. Tests pass a transport, a store or a tracing instead of patching."""
    if tracing is None:
        tracing = Tracing.from_env(os.environ)
    minter = TokenMinter(settings)
    svc = Services(
        settings=settings,
        minter=minter,
        verifier=TokenVerifier(settings),
        metrics=metrics_registry or Metrics(),
        log_key=hash_key(settings.signing_key.secret.reveal()),
        tracing=tracing if tracing.enabled else None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc.upstream = Upstream.create(settings, upstream_transport)
        own_store = store is None
        svc.store = store if store is not None else await open_store(settings)
        watch(svc.upstream, svc.store, svc.metrics)
        svc.cache = ReferralCache(svc.store, settings)
        svc.limiter = Limiter(svc.store)
        svc.idempotency = Idempotency(svc.store, wait=settings.upstream_timeout + 2)
        svc.ready = True
        log.info(
            "keys.loaded",
            signing_kid=settings.signing_key.kid,
            verifying_kids=[key.kid for key in settings.signing_keys],
            issuer_count=len(settings.issuer_keys),
        )
        log.info(
            "broker.started",
            shop=settings.shop,
            store=svc.store.state,
        )
        try:
            yield
        finally:
            svc.ready = False
            await svc.upstream.aclose()
            if own_store:
                await svc.store.aclose()
            svc.metrics.process_exiting()
            # Flushing may wait on the collector: off the event loop.
            await asyncio.to_thread(tracing.shutdown)
            log.info("broker.stopped")

    static_dir = Path(__file__).with_name("static")
    routes = [
        Route("/tokens", endpoint("/tokens", mint_token), methods=["POST"]),
        Route(API_ROUTE, endpoint(API_ROUTE, api_call), methods=["GET", "POST", "OPTIONS"]),
        Route("/healthz", endpoint("/healthz", healthz), methods=["GET"]),
        Route("/readyz", endpoint("/readyz", readyz), methods=["GET"]),
        Route("/metrics", endpoint("/metrics", metrics), methods=["GET"]),
        Route("/openapi.json", endpoint("/openapi.json", openapi), methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(static_dir), check_dir=False), name="static"),
    ]

    def observe(info: RequestInfo, method: str, seconds: float) -> None:
        svc.metrics.observe_request(
            route=info.route,
            method=method,
            status=info.status,
            error_id=info.error_id,
            seconds=seconds,
        )

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(TelemetryMiddleware, observe=observe, tracing=svc.tracing),
            Middleware(CORSMiddleware, origins=settings.cors_origins),
        ],
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
    # Every path is exact: a trailing slash is another path (404), never a redirect.
    app.router.redirect_slashes = False
    app.state.services = svc
    return app
