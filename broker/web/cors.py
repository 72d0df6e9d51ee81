"""CORS for storefront origins: preflights answered here, headers on every answer.

Pure ASGI. Origins are exact (``https://shop.example``) or a sub-domain wildcard
(``https://*.shop.example``: any host under it, never the apex, same scheme and port).
The middleware is given the app's own routes, so it copies none of the routing: preflights are
answered for the browser routes (with each route's own methods), and the server-to-server
routes never get CORS headers, so no browser page can read their answers.

With several shops (spec 2.1), a path under ``/api/<version>/<shop>/`` that names a configured
shop is answered for that shop's origins only; any other path (the client files, a shop nobody
configured) for every shop's origins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ALLOW_HEADERS = (
    b"Authorization, Content-Type, Idempotency-Key, Consistency-Token, X-Request-ID, traceparent"
)
EXPOSE_HEADERS = (
    b"X-Request-ID, Retry-After, Cache-Status, Consistency-Token, RateLimit, RateLimit-Policy, "
    b"Idempotent-Replayed"
)
PREFLIGHT_MAX_AGE = b"600"
PREFLIGHT_VARY = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
HOST_LABELS = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+$")


class OriginPolicy:
    """Which origins may read the broker's answers."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.exact = frozenset(o.lower() for o in origins if "*." not in o)
        self.wildcards: list[tuple[str, str]] = []
        for origin in origins:
            if "*." in origin:
                scheme, rest = origin.lower().split("://*.", 1)
                self.wildcards.append((scheme + "://", "." + rest))

    def allows(self, origin: str) -> bool:
        lowered = origin.lower()
        if lowered in self.exact:
            return True
        for prefix, suffix in self.wildcards:
            if lowered.startswith(prefix) and lowered.endswith(suffix):
                labels = lowered[len(prefix) : len(lowered) - len(suffix) + 1]
                if HOST_LABELS.fullmatch(labels):
                    return True
        return False


def allowed_methods(route: Route) -> str:
    """A route's methods, said plainly (HEAD goes without saying)."""
    return ", ".join(m for m in METHOD_ORDER if m in (route.methods or ()))


class RouteGroup:
    """Some of the app's routes, matched against a request path by the routes themselves.

    A whole-path match (``fullmatch``): Starlette's ``$`` alone would take ``/Refer2\\n`` too.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        plain = [r for r in routes if isinstance(r, Route)]
        self.exact = {r.path: r for r in plain if not r.param_convertors}
        self.templated = tuple(r for r in plain if r.param_convertors)
        # What a preflight of each route answers, said once.
        self.methods = {r.path: allowed_methods(r).encode() for r in plain}

    def find(self, path: str) -> Route | None:
        """The route of this group whose path template matches ``path``, if any."""
        route = self.exact.get(path)
        if route is not None:
            return route
        for candidate in self.templated:
            if candidate.path_regex.fullmatch(path):
                return candidate
        return None


class CORSMiddleware:
    """CORS for ``origins``: preflights of the ``browser`` routes, none for ``server_only``."""

    def __init__(
        self,
        app: ASGIApp,
        origins: tuple[str, ...],
        browser: Sequence[BaseRoute] = (),
        server_only: Sequence[BaseRoute] = (),
        shop_origins: Mapping[str, tuple[str, ...]] | None = None,
        path_origins: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.app = app
        self.policy = OriginPolicy(origins)
        self.browser = RouteGroup(browser)
        self.server_only = RouteGroup(server_only)
        # The policy of each shop's paths; shops with the same origins share one.
        shared: dict[tuple[str, ...], OriginPolicy] = {}
        self.shop_policies = {
            shop: shared.setdefault(given, OriginPolicy(given))
            for shop, given in (shop_origins or {}).items()
        }
        # Routes that name no shop in their path but serve some shops only (/bigcommerce/token).
        self.path_policies = {
            path: shared.setdefault(given, OriginPolicy(given))
            for path, given in (path_origins or {}).items()
        }

    def policy_for(self, path: str) -> OriginPolicy:
        """The origins of the shop ``/api/<version>/<shop>/...`` names, or of the shops a route
        serves, else everyone's."""
        if path in self.path_policies:
            return self.path_policies[path]
        if self.shop_policies and path.startswith("/api/"):
            parts = path.split("/", 4)
            if len(parts) > 3:
                return self.shop_policies.get(parts[3], self.policy)
        return self.policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        closed = self.server_only
        # The set lookup first: every request passes here, and those routes have no parameters.
        if (
            scope["type"] != "http"
            or scope["path"] in closed.exact
            or (closed.templated and closed.find(scope["path"]) is not None)
        ):
            await self.app(scope, receive, send)
            return
        origin = None
        preflight = False
        for key, value in scope["headers"]:
            if key == b"origin":
                origin = value.decode("latin-1")
            elif key == b"access-control-request-method":
                preflight = True
        if origin is None or not self.policy_for(scope["path"]).allows(origin):
            await self.app(scope, receive, send)
            return
        origin_bytes = origin.encode("latin-1")
        route = self.browser.find(scope["path"]) if preflight else None
        if route is not None and scope["method"] == "OPTIONS":
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [
                        (b"access-control-allow-origin", origin_bytes),
                        (b"access-control-allow-methods", self.browser.methods[route.path]),
                        (b"access-control-allow-headers", ALLOW_HEADERS),
                        (b"access-control-max-age", PREFLIGHT_MAX_AGE),
                        (b"vary", PREFLIGHT_VARY),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"vary"]
                vary = [v for k, v in message.get("headers", []) if k.lower() == b"vary"]
                vary_value = b", ".join(vary) if vary else b""
                if b"origin" not in vary_value.lower():
                    vary_value = vary_value + b", Origin" if vary_value else b"Origin"
                headers += [
                    (b"access-control-allow-origin", origin_bytes),
                    (b"access-control-expose-headers", EXPOSE_HEADERS),
                    (b"vary", vary_value),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_cors)
