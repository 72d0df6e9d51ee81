"""docs/recipes.md's BigCommerce snippet in a real headless Chromium, on a BigCommerce look-alike.

Three real servers on loopback: the sandbox (Bubblehouse), the broker (CORS for the store only,
configured for the store's app) and a store whose page is the recipe's Script Manager snippet and
whose ``/customer/current.jwt`` answers as BigCommerce's does: the JWT of the signed-in shopper,
known by the store's session cookie, and 404 for a visitor.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import jwt
import pytest
from playwright.sync_api import Browser, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from broker.rules.tokens import TokenMinter
from broker.web.app import create_app
from broker_dev.sandbox import SandboxConfig, create_sandbox_app
from broker_dev.sandbox.bigcommerce import BigCommerceStore, current_customer_route
from tests.e2e.test_recipes import recipes
from tests.servers import free_port, serve_app
from tests.stack import READ_PATH, bigcommerce_env
from tests.support import SECRET_A, SECRET_B, SHOP, make_settings

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-bigcommerce")]

STORE = BigCommerceStore(
    client_id="e2e-bigcommerce-app",
    client_secret="e2e-bigcommerce-client-secret-0123456789",
    store_hash="e2estore",
    customer_id=6001,
    email="shopper.6001@example.com",
)
SESSION = "SHOP_SESSION_TOKEN"  # the store's session cookie: present only once signed in
RECIPE = "bigcommerce-script-manager.html"


@dataclass(frozen=True)
class Stack:
    broker: str
    store: str
    minter: TokenMinter


def store_app(broker_url: str) -> Starlette:
    """The BigCommerce store: the recipe pasted into Script Manager, and the Current Customer
    API answering for whoever the session cookie says is signed in."""
    snippet = (
        recipes()[RECIPE]
        .replace("https://referrals.shop.example", broker_url)
        .replace("your-shop-slug", SHOP)
        .replace("your-bigcommerce-app-client-id", STORE.client_id)
    )
    current = current_customer_route(STORE).endpoint

    async def page(request: Request) -> Response:
        html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A BigCommerce store</title></head>
<body><main><h1>My account</h1>
{snippet}
</main></body></html>"""
        return HTMLResponse(html)

    async def current_jwt(request: Request) -> Response:
        if SESSION not in request.cookies:
            return PlainTextResponse("Not logged in", status_code=404)
        answer: Response = await current(request)
        return answer

    routes = [Route("/", page), Route("/customer/current.jwt", current_jwt)]
    return Starlette(routes=routes)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Sandbox, broker (CORS for the store only) and the store, on three ports."""
    keys = {"key-a": base64.b64decode(SECRET_A), "key-b": base64.b64decode(SECRET_B)}
    store_port = free_port()
    with serve_app(create_sandbox_app(SandboxConfig(shop=SHOP, keys=keys))) as sandbox:
        settings = make_settings(
            BROKER_UPSTREAM_URL=sandbox.url,
            BROKER_CORS_ORIGINS=f"http://127.0.0.1:{store_port}",
            **bigcommerce_env(STORE),
        )
        with (
            serve_app(create_app(settings)) as broker,
            serve_app(store_app(broker.url), port=store_port) as store,
        ):
            yield Stack(broker.url, store.url, TokenMinter(settings))


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh context; the test fails on any uncaught script error."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == []


def requests_to(page: Page, host: str) -> list[Any]:
    """Every request the page makes to ``host``, as they happen."""
    seen: list[Any] = []

    def record(request: Any) -> None:
        if request.url.startswith(host):
            seen.append(request)

    page.on("request", record)
    return seen


def test_the_signed_in_shopper_sees_their_history(page: Page, stack: Stack) -> None:
    """Signed in to the store, the snippet exchanges BigCommerce's JWT for a token of that
    customer (with the email as ce), and the widget reads that customer's history with it."""
    token = stack.minter.customer_token(str(STORE.customer_id)).token
    sent = httpx2.post(
        f"{stack.broker}/api/v2023061/{SHOP}/Refer2",
        json={"channel": "whatsapp"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert sent.status_code == 200, sent.text
    page.context.add_cookies([{"name": SESSION, "value": "signed-in", "url": stack.store}])
    to_broker = requests_to(page, stack.broker)
    page.goto(stack.store)
    widget = page.locator("referral-widget")
    expect(widget.locator("ul[part=history]")).to_have_attribute("aria-busy", "false")
    rows = widget.locator("[part=referral]")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("WhatsApp")
    exchanges = [r for r in to_broker if r.url.endswith("/bigcommerce/token")]
    assert [r.method for r in exchanges] == ["POST"]
    assert json.loads(exchanges[0].post_data)["token"].count(".") == 2
    reads = [r for r in to_broker if r.url.endswith(READ_PATH.rsplit("/", 1)[1])]
    assert reads
    bearer = reads[-1].headers["authorization"].removeprefix("Bearer ")
    claims = jwt.decode(bearer, options={"verify_signature": False})
    assert (claims["sub"], claims["ce"]) == (f"{SHOP}/{STORE.customer_id}", STORE.email)


def test_a_visitor_is_asked_to_sign_in(page: Page, stack: Stack) -> None:
    """Nobody signed in: the store answers 404, nothing is exchanged, the widget asks to sign in."""
    to_broker = requests_to(page, stack.broker)
    page.goto(stack.store)
    widget = page.locator("referral-widget")
    expect(widget.get_by_text("Sign in to refer your friends.")).to_be_visible()
    assert not [r for r in to_broker if r.url.endswith("/bigcommerce/token")]
