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
from typing import Any

import orjson
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from broker import inputs, issuers
from broker.api import ALLOWED, ReferralCall, bearer_of
from broker.cache import ReferralCache
from broker.clientfiles import ClientFiles, static_mount
from broker.cors import CORSMiddleware
from broker.errors import (
    BrokerError,
    InternalError,
    InvalidToken,
    MethodNotAllowed,
    MissingToken,
    NotFound,
    NotReady,
    PayloadTooLarge,
)
from broker.idempotency import Idempotency
from broker.limits import Limiter, LocalLimits
from broker.logs import customer_hash, hash_key
from broker.metrics import Metrics
from broker.nearcache import Invalidations, NearCache
from broker.openapi import openapi_document
from broker.referrals import READ, WRITE, Referrals
from broker.responses import JSONBytesResponse, problem_response
from broker.settings import Settings
from broker.shopify import shopify_token
from broker.store import Store, open_store
from broker.telemetry import RequestInfo, TelemetryMiddleware, request_info
from broker.tokens import TokenMinter, TokenVerifier
from broker.tracing import Tracing
from broker.transport import Transport
from broker.upstream import Upstream

log = structlog.get_logger("broker.app")

METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


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
    referrals: Referrals | None = None
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
    raw = await read_body(request)
    inputs.check_content_type(request.headers.get("content-type"), bool(raw))
    return inputs.decode_object(raw)


# --- POST /tokens -------------------------------------------------------------------------


async def mint_token(request: Request, svc: Services, info: RequestInfo) -> Response:
    assert svc.limiter is not None
    try:
        presented = bearer(request)
    except InvalidToken:
        presented = None
    client = request.client.host if request.client else "unknown"
    await issuers.admit(svc.limiter, svc.settings, presented, client)
    wanted = inputs.token_request(await json_body(request))
    minted = svc.minter.customer_token(wanted.customer_id, wanted.email, wanted.ttl)
    info.customer = customer_hash(svc.log_key, wanted.customer_id)
    return JSONBytesResponse(minted.answer(), headers={"Cache-Control": "no-store"})


# --- POST /invalidations ------------------------------------------------------------------


async def invalidate(request: Request, svc: Services, info: RequestInfo) -> Response:
    """Drop one customer's cached history (spec 3.5), for changes made outside the broker."""
    assert svc.limiter is not None and svc.cache is not None
    try:
        presented = bearer(request)
    except InvalidToken:
        presented = None
    client = request.client.host if request.client else "unknown"
    await issuers.admit(svc.limiter, svc.settings, presented, client)
    customer_id = inputs.invalidation_request(await json_body(request))
    info.customer = customer_hash(svc.log_key, customer_id)
    await svc.cache.invalidate(svc.settings.shop, customer_id)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


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
        allow = {m.strip() for m in (headers or {}).get("Allow", "").split(",") if m.strip()}
        # Starlette lists a route's methods in set order, with HEAD beside GET: say them plainly.
        error = MethodNotAllowed(tuple(m for m in METHOD_ORDER if m in allow))
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


async def route_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint of the route :meth:`BrokerApp.hot_lane` matched (put in the scope)."""
    await scope["endpoint"](scope, receive, send)


class BrokerApp(Starlette):
    """Starlette, with a short lane for the two browser calls.

    A request that fully matches one of the hot routes (path and method) skips Starlette's error
    and exception middlewares and its router, and runs the same request middlewares (telemetry,
    CORS) around the route's endpoint directly; those endpoints answer every error themselves.
    Matching uses the routes' own ``matches``, so the routing is written once, in the route list;
    anything else (a wrong method included) takes Starlette's path as usual.
    """

    _hot_routes: tuple[Route, ...] = ()
    _hot_chain: ASGIApp | None = None

    def hot_lane(self, routes: list[BaseRoute], chain: ASGIApp) -> None:
        self._hot_routes = tuple(r for r in routes if isinstance(r, Route))
        self._hot_chain = chain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chain = self._hot_chain
        if chain is not None and scope["type"] == "http" and scope["path"].startswith("/api/"):
            for route in self._hot_routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self
                    scope.update(child)
                    await chain(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    upstream_transport: Transport | None = None,
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
        near = None
        background: list[asyncio.Task[None]] = [
            asyncio.create_task(svc.metrics.run(), name="metrics-flush")
        ]
        if svc.store.redis is not None and settings.near_cache_mb > 0:
            assert settings.redis_url is not None
            near = NearCache(settings.api_versions, max_bytes=settings.near_cache_mb << 20)
            store_ref = svc.store
            near.set_store_up(store_ref.state == "up")
            store_ref.on_state_change(lambda state: near.set_store_up(state == "up"))
            listener = Invalidations(svc.store, near, settings.redis_url.reveal())
            background.append(asyncio.create_task(listener.run(), name="near-invalidations"))
        svc.cache = ReferralCache(svc.store, settings, near=near)
        svc.limiter = Limiter(svc.store)
        local_limits = None
        if settings.rate_limit_sync > 0:
            local_limits = LocalLimits(svc.store, settings.rate_limit_sync)
            background.append(asyncio.create_task(local_limits.run(), name="limit-sync"))
        svc.idempotency = Idempotency(
            svc.store,
            wait=settings.upstream_timeout + 2,
            pending_keep=settings.cache_ttl + settings.cache_stale_ttl + 3600,
        )
        svc.referrals = Referrals(
            settings=settings,
            minter=minter,
            upstream=svc.upstream,
            cache=svc.cache,
            limiter=svc.limiter,
            idempotency=svc.idempotency,
            metrics=svc.metrics,
            local_limits=local_limits,
            tracing=svc.tracing,
        )
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
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if local_limits is not None:
                with contextlib.suppress(Exception):
                    await local_limits.sync()  # the last counts reach the others
            await svc.upstream.aclose()
            if own_store:
                await svc.store.aclose()
            svc.metrics.process_exiting()
            # Flushing may wait on the collector: off the event loop.
            await asyncio.to_thread(tracing.shutdown)
            log.info("broker.stopped")

    routes = [
        # The two browser calls first: every storefront page view matches the first route.
        Route(f"/api/{{version}}/{{shop}}/{READ}", ReferralCall(READ, svc), methods=ALLOWED[READ]),
        Route(
            f"/api/{{version}}/{{shop}}/{WRITE}", ReferralCall(WRITE, svc), methods=ALLOWED[WRITE]
        ),
        Route("/tokens", endpoint("/tokens", mint_token), methods=["POST"]),
        Route("/invalidations", endpoint("/invalidations", invalidate), methods=["POST"]),
        Route("/healthz", endpoint("/healthz", healthz), methods=["GET"]),
        Route("/readyz", endpoint("/readyz", readyz), methods=["GET"]),
        Route("/metrics", endpoint("/metrics", metrics), methods=["GET"]),
        Route("/openapi.json", endpoint("/openapi.json", openapi), methods=["GET"]),
        Route("/shopify/token", endpoint("/shopify/token", shopify_token), methods=["GET"]),
        static_mount(ClientFiles.load()),
    ]

    def observe(info: RequestInfo, method: str, seconds: float) -> None:
        svc.metrics.observe_request(
            route=info.route,
            method=method,
            status=info.status,
            error_id=info.error_id,
            seconds=seconds,
        )

    app = BrokerApp(
        routes=routes,
        middleware=[
            Middleware(TelemetryMiddleware, observe=observe, tracing=svc.tracing),
            Middleware(CORSMiddleware, origins=settings.cors_origins),
        ],
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
    app.hot_lane(
        routes[:2],
        TelemetryMiddleware(
            CORSMiddleware(route_endpoint, origins=settings.cors_origins),
            observe=observe,
            tracing=svc.tracing,
        ),
    )
    # Every path is exact: a trailing slash is another path (404), never a redirect.
    app.router.redirect_slashes = False
    app.state.services = svc
    return app
