"""The app factory: the lists of routes and middleware, and the lifespan of one process.

``create_app(settings)`` builds the app; nothing happens at import. The lifespan opens every
resource (:func:`broker.services.running`) and hands handlers one fully built
:class:`~broker.services.Services` through a :class:`~broker.services.Live`. Handlers live by
concern: the two browser calls in :mod:`broker.web.api`, the merchant server's routes in
:mod:`broker.web.merchant`, the operator's in :mod:`broker.web.operations`, Shopify's in
:mod:`broker.web.shopify`, BigCommerce's in :mod:`broker.web.bigcommerce`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.config.settings import Settings
from broker.errors import BrokerError, InternalError, MethodNotAllowed, NotFound
from broker.rules.functions import FUNCTIONS
from broker.services import Services, State, running
from broker.store.store import Store
from broker.telemetry.metrics import Metrics
from broker.telemetry.request import RequestInfo
from broker.telemetry.tracing import Tracing
from broker.upstream.transport import Transport
from broker.web.api import ReferralCall
from broker.web.bigcommerce import METHODS as BIGCOMMERCE_METHODS
from broker.web.bigcommerce import bigcommerce_token
from broker.web.clientfiles import ClientFiles, static_mount
from broker.web.cors import METHOD_ORDER, CORSMiddleware
from broker.web.endpoints import Handler, endpoint
from broker.web.merchant import invalidate, mint_token
from broker.web.operations import healthz, metrics, openapi, readyz
from broker.web.paths import ControlCharacterPaths
from broker.web.requestlog import TelemetryMiddleware, request_info
from broker.web.responses import problem_response
from broker.web.shopify import shopify_token

__all__ = ["BrokerApp", "Services", "create_app", "endpoint"]

log = structlog.get_logger("broker.app")


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
    info.error_id = error.id
    return problem_response(error, info.request_id)


HOT_ROUTE = "broker.route"  # the scope key of the route the hot lane matched


async def hot_route(scope: Scope, receive: Receive, send: Send) -> None:
    """Hand the request to the route :meth:`BrokerApp.hot_lane` matched, through its interface."""
    route: Route = scope[HOT_ROUTE]
    await route.handle(scope, receive, send)


class BrokerApp(Starlette):
    """Starlette, with a short lane for the two browser calls.

    A request that fully matches one of the hot routes (path and method) skips Starlette's error
    and exception middlewares and its router, and runs the same request middlewares (request log,
    CORS) around the route's endpoint directly; those endpoints answer every error themselves.
    Matching uses the routes' own ``matches``, so the routing is written once, in the route list;
    anything else (a wrong method included) takes Starlette's path as usual.
    """

    _hot_routes: tuple[Route, ...] = ()
    _hot_chain: ASGIApp | None = None

    def hot_lane(self, routes: Sequence[BaseRoute], chain: ASGIApp) -> None:
        self._hot_routes = tuple(r for r in routes if isinstance(r, Route))
        self._hot_chain = chain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chain = self._hot_chain
        if chain is not None and scope["type"] == "http" and scope["path"].startswith("/api/"):
            for route in self._hot_routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self
                    scope[HOT_ROUTE] = route
                    scope.update(child)
                    await chain(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def handled(path: str, handler: Handler, method: str, name: str) -> Route:
    """A route to a handler wrapped by :func:`~broker.web.endpoints.endpoint`."""
    return Route(path, endpoint(path, handler), methods=[method], name=name)


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
    metrics_ = metrics_registry or Metrics()
    metrics_.limit_shops(settings.shops.slugs)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        async with running(
            settings,
            metrics=metrics_,
            tracing=tracing,
            upstream_transport=upstream_transport,
            store=store,
        ) as services:
            # The ASGI lifespan state: the server hands a copy to every request (scope["state"]).
            try:
                yield {"services": services}
            finally:
                services.ready = False

    # The two browser calls first: every storefront page view matches the first route. Routes
    # are named: the OpenAPI document (broker.openapi.document) describes each by its name.
    browser = [Route(f.route, ReferralCall(f), methods=f.allowed, name=f.name) for f in FUNCTIONS]
    # Called by storefront scripts too, so with CORS, but not one of the hot browser calls.
    storefront = [
        Route(
            "/bigcommerce/token",
            endpoint("/bigcommerce/token", bigcommerce_token),
            methods=list(BIGCOMMERCE_METHODS),
            name="bigcommerce_token",
        )
    ]
    server_only = [
        handled("/tokens", mint_token, "POST", "tokens"),
        handled("/invalidations", invalidate, "POST", "invalidations"),
        handled("/shopify/token", shopify_token, "GET", "shopify_token"),
    ]
    metrics_route = handled("/metrics", metrics, "GET", "metrics")
    operator = [
        handled("/healthz", healthz, "GET", "healthz"),
        handled("/readyz", readyz, "GET", "readyz"),
        metrics_route,
        handled("/openapi.json", openapi, "GET", "openapi"),
    ]
    routes = [*browser, *storefront, *server_only, *operator, static_mount(ClientFiles.load())]

    def observe(info: RequestInfo, method: str, seconds: float) -> None:
        metrics_.observe_request(
            route=info.route,
            shop=info.shop,
            method=method,
            status=info.status,
            error_id=info.error_id,
            seconds=seconds,
        )

    live_tracing = tracing if tracing.enabled else None
    bigcommerce_origins = tuple(
        dict.fromkeys(o for shop in settings.shops if shop.bigcommerce for o in shop.cors_origins)
    )
    middleware = [
        Middleware(TelemetryMiddleware, observe=observe, tracing=live_tracing),
        Middleware(ControlCharacterPaths),  # before CORS and routing: spec 3.4
        Middleware(
            CORSMiddleware,
            origins=settings.shops.origins(),
            shop_origins={shop.slug: shop.cors_origins for shop in settings.shops},
            # /bigcommerce/token: the origins of the shops it is configured for (spec 4).
            path_origins={"/bigcommerce/token": bigcommerce_origins}
            if bigcommerce_origins
            else None,
            browser=[*browser, *storefront],
            server_only=[*server_only, metrics_route],  # spec 4: /metrics is no browser's
        ),
    ]
    app = BrokerApp(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
    # The hot lane runs the same middlewares, built from the same list, around the endpoint.
    chain: ASGIApp = hot_route
    for layer in reversed(middleware):
        chain = layer.cls(chain, *layer.args, **layer.kwargs)
    app.hot_lane(browser, chain)
    # Every path is exact: a trailing slash is another path (404), never a redirect.
    app.router.redirect_slashes = False
    return app
