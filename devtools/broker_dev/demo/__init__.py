"""The demo storefront: a tiny merchant web app that `broker dev` serves beside the broker.

It plays the merchant's server: it logs a demo customer in by asking the broker for a customer
token with the issuer key (which never reaches the browser), relays faults to the sandbox's
control API so the page can show how each error looks, and moves the signed-in customer's
referrals on (``POST /demo/referrals/{referral_bhid}``: the sandbox's status change, then
``POST /invalidations`` on the broker, as a merchant's webhook handler would). The page itself
lives in ``static/demo.html`` beside this module and loads ``referrals.js`` from the broker's
origin, so the browser exercises CORS for real. ``/widget`` is the other way to put referrals on
a page: only the ``<referral-widget>``, in three lines of HTML, with its token from
``/demo/token``.
"""

from __future__ import annotations

import contextlib
import html
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from broker.web.connections import IDLE_SECONDS

STATIC = Path(__file__).parent / "static"

# The fault switches of the sandbox's control API the page may flip; anything else is refused,
# so the demo is not a general relay to the sandbox.
FAULT_FIELDS = frozenset(
    {"status", "id", "message", "rate_limit", "reject_tokens", "delay", "html", "drop"}
    | {"times", "functions"}
)

# The statuses the page may move a referral to, in the order of a referral's life.
LATER_STATUSES = ("qualified", "approved", "rejected")

# The page's own files, served by the demo app; referrals.js comes from the broker.
ASSETS = {"/demo.css": "demo.css", "/demo.js": "demo.js"}

# The whole storefront page of /widget: the widget from the broker's versioned URL, checked by
# its SRI hash, and the element. Everything else is the widget's.
WIDGET_PAGE = """<!doctype html><html lang="en"><meta charset="utf-8"><title>Refer a friend</title>
<script type="module" src="{src}" integrity="{integrity}" crossorigin="anonymous"></script>
<referral-widget broker="{broker}" shop="{shop}" version="{version}" token-url="/demo/token">\
</referral-widget>
"""
WIDGET_CUSTOMER = "demo-widget"

# Short: the page only ever asks the local broker and sandbox.
TIMEOUT = httpx2.Timeout(10.0, connect=2.0)
# A kept-alive connection is dropped well before the broker closes it as idle, never reused
# just as the broker closes it (which fails the request: "disconnected without a response").
LIMITS = httpx2.Limits(keepalive_expiry=IDLE_SECONDS / 2)


@dataclass(frozen=True)
class DemoConfig:
    broker_url: str
    sandbox_url: str
    issuer_key: str
    shop: str
    version: str


def problem(status: int, error_id: str, message: str, **extra: Any) -> JSONResponse:
    """The broker's error shape, for the demo app's own refusals."""
    request_id = uuid.uuid4().hex
    body = {
        "type": f"urn:referral-broker:error:{error_id}",
        "title": error_id.replace("_", " ").capitalize(),
        "status": status,
        "id": error_id,
        "message": message,
        "retryable": status >= 500,
        "request_id": request_id,
        **extra,
    }
    return JSONResponse(
        body,
        status_code=status,
        media_type="application/problem+json",
        headers={"X-Request-ID": request_id},
    )


def relay(upstream: httpx2.Response) -> Response:
    """Pass an answer of the broker or sandbox on, with its body, status and request id."""
    headers = {
        name: upstream.headers[name]
        for name in ("X-Request-ID", "Retry-After")
        if name in upstream.headers
    }
    return Response(
        upstream.content,
        status_code=upstream.status_code,
        media_type=upstream.headers.get("content-type", "application/json"),
        headers=headers,
    )


async def json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def create_demo_app(
    *, broker_url: str, sandbox_url: str, issuer_key: str, shop: str, version: str
) -> Starlette:
    """The demo merchant app: the page, a login that mints tokens, and relays to the sandbox."""
    config = DemoConfig(
        broker_url=broker_url.rstrip("/"),
        sandbox_url=sandbox_url.rstrip("/"),
        issuer_key=issuer_key,
        shop=shop,
        version=version,
    )
    state: dict[str, httpx2.AsyncClient] = {}

    def client() -> httpx2.AsyncClient:
        return state["client"]

    async def as_merchant(path: str, payload: dict[str, Any]) -> httpx2.Response:
        """A server-to-server call to the broker with the issuer key, as a merchant app makes."""
        return await client().post(
            f"{config.broker_url}{path}",
            json=payload,
            headers={"Authorization": f"Bearer {config.issuer_key}"},
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx2.AsyncClient(timeout=TIMEOUT, limits=LIMITS) as http:
            state["client"] = http
            yield
            del state["client"]

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "demo.html", headers={"Cache-Control": "no-cache"})

    async def asset(request: Request) -> Response:
        name = ASSETS[request.url.path]
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    async def widget_page(request: Request) -> Response:
        try:
            answer = await client().get(f"{config.broker_url}/static/manifest.json")
            entry = answer.json()["files"]["referral-widget.js"]
        except (httpx2.HTTPError, ValueError, KeyError, TypeError):
            return problem(502, "broker_unreachable", "The demo app could not read the manifest.")
        page = WIDGET_PAGE.format(
            src=html.escape(config.broker_url + entry["path"]),
            integrity=html.escape(entry["integrity"]),
            broker=html.escape(config.broker_url),
            shop=html.escape(config.shop),
            version=html.escape(config.version),
        )
        return Response(page, media_type="text/html", headers={"Cache-Control": "no-cache"})

    async def widget_token(request: Request) -> Response:
        """The merchant's token route for the widget: the demo's one widget customer."""
        try:
            answer = await as_merchant("/tokens", {"customer_id": WIDGET_CUSTOMER})
        except httpx2.HTTPError:
            return problem(502, "broker_unreachable", "The demo app could not reach the broker.")
        if answer.status_code != 200:
            return relay(answer)
        minted = answer.json()
        return JSONResponse(
            {"token": minted["token"], "expires_at": minted.get("expires_at")},
            headers={"Cache-Control": "no-store"},
        )

    async def demo_config(request: Request) -> Response:
        return JSONResponse(
            {"brokerUrl": config.broker_url, "shop": config.shop, "version": config.version}
        )

    async def login(request: Request) -> Response:
        body = await json_object(request)
        if body is None:
            return problem(400, "invalid_json", "Send a JSON object with customer_id.")
        customer_id = body.get("customer_id")
        if not isinstance(customer_id, str) or not customer_id.strip():
            return problem(400, "invalid_input", "Pick a customer id.", field="customer_id")
        payload: dict[str, Any] = {"customer_id": customer_id.strip()}
        email = body.get("email")
        if isinstance(email, str) and email.strip():
            payload["email"] = email.strip()
        ttl = body.get("ttl")
        if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0:
            payload["ttl"] = ttl
        try:
            answer = await as_merchant("/tokens", payload)
        except httpx2.HTTPError:
            return problem(502, "broker_unreachable", "The demo app could not reach the broker.")
        if answer.status_code != 200:
            return relay(answer)
        minted = answer.json()
        return JSONResponse(
            {
                "token": minted["token"],
                "expires_at": minted.get("expires_at"),
                "expires_in": minted.get("expires_in"),
            },
            headers={"Cache-Control": "no-store"},
        )

    async def fault(request: Request) -> Response:
        url = f"{config.sandbox_url}/_sandbox/faults"
        try:
            if request.method == "DELETE":
                return relay(await client().delete(url))
            body = await json_object(request)
            if body is None:
                return problem(400, "invalid_json", "Send a JSON object describing the fault.")
            unknown = sorted(set(body) - FAULT_FIELDS)
            if unknown:
                return problem(
                    400, "invalid_input", f"Unknown fault field '{unknown[0]}'.", field=unknown[0]
                )
            return relay(await client().post(url, json=body))
        except httpx2.HTTPError:
            return problem(502, "sandbox_unreachable", "The demo app could not reach the sandbox.")

    async def owns_referral(token: str, referral_bhid: str) -> Response | None:
        """None if ``referral_bhid`` is in the token's customer's history; else the refusal."""
        url = f"{config.broker_url}/api/{config.version}/{config.shop}/CustomerReferrals2"
        try:
            answer = await client().post(url, json={}, headers={"Authorization": f"Bearer {token}"})
        except httpx2.HTTPError:
            return problem(502, "broker_unreachable", "The demo app could not reach the broker.")
        if answer.status_code != 200:
            return relay(answer)  # the broker's own refusal of the token (invalid_token, ...)
        try:
            rows = answer.json()["referrals"]
            owned = any(
                isinstance(r, dict) and r.get("referral_bhid") == referral_bhid for r in rows
            )
        except (ValueError, KeyError, TypeError):
            return problem(502, "broker_unreachable", "The broker's history was not readable.")
        if owned:
            return None
        return problem(
            404,
            "unknown_referral",
            "This referral is not one of the signed-in customer's referrals.",
        )

    async def move_referral(request: Request) -> Response:
        """The sandbox's status change for one of the caller's referrals, then the invalidation.

        The caller proves who it is with its customer token (the broker checks it by reading
        that customer's history, which must hold the referral); the issuer key stays here.
        """
        referral_bhid = request.path_params["referral_bhid"]
        body = await json_object(request)
        if body is None:
            return problem(400, "invalid_json", "Send a JSON object with status.")
        status = body.get("status")
        if status not in LATER_STATUSES:
            return problem(
                400,
                "invalid_input",
                f"status must be one of {', '.join(LATER_STATUSES)}.",
                field="status",
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return problem(401, "missing_token", "Send the customer's token as a bearer token.")
        refused = await owns_referral(token.strip(), referral_bhid)
        if refused is not None:
            return refused
        try:
            moved = await client().post(
                f"{config.sandbox_url}/_sandbox/referrals/{quote(referral_bhid, safe='')}",
                json={"status": status},
            )
        except httpx2.HTTPError:
            return problem(502, "sandbox_unreachable", "The demo app could not reach the sandbox.")
        if moved.status_code != 200:
            return relay(moved)
        try:
            customer_id = moved.json()["customer"]
        except (ValueError, KeyError, TypeError):
            return problem(502, "sandbox_unreachable", "The sandbox's answer was not readable.")
        try:
            dropped = await as_merchant("/invalidations", {"customer_id": customer_id})
        except httpx2.HTTPError:
            return problem(502, "broker_unreachable", "The demo app could not reach the broker.")
        if dropped.status_code != 204:
            return relay(dropped)
        # Not the sandbox's row: it holds the friend's unmasked address, which a customer token
        # may not see. The page reads the history again through the broker.
        return JSONResponse({"referral_bhid": referral_bhid, "status": status})

    async def calls(request: Request) -> Response:
        try:
            return relay(await client().get(f"{config.sandbox_url}/_sandbox/calls"))
        except httpx2.HTTPError:
            return problem(502, "sandbox_unreachable", "The demo app could not reach the sandbox.")

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/widget", widget_page, methods=["GET"]),
        Route("/demo/token", widget_token, methods=["GET"]),
        Route("/demo/config", demo_config, methods=["GET"]),
        Route("/demo/login", login, methods=["POST"]),
        Route("/demo/fault", fault, methods=["POST", "DELETE"]),
        Route("/demo/calls", calls, methods=["GET"]),
        Route("/demo/referrals/{referral_bhid}", move_referral, methods=["POST"]),
        *(Route(path, asset, methods=["GET"]) for path in ASSETS),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
