"""The Shopify recipe of docs/recipes.md (whole files under docs/recipes/shopify): the app's
proxy and scope, and the theme app extension's block, checked by Shopify's own theme checker,
rendered with a Liquid engine and run in Chromium behind an app proxy against a real broker."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
from playwright.sync_api import Browser, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from broker.web.app import create_app
from broker_dev.sandbox import SandboxConfig, create_sandbox_app
from tests.servers import free_port, serve_app
from tests.support import KEEPALIVE, SECRET_A, SECRET_B, SHOP, make_settings

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js"
RECIPES = ROOT / "docs" / "recipes"
SHOPIFY = RECIPES / "shopify"
EXTENSION = SHOPIFY / "extensions" / "referral-widget"
BLOCK = EXTENSION / "blocks" / "referral-widget.liquid"
LOADER = EXTENSION / "assets" / "referral-widget-loader.js"
DOC_BROKER = "https://referrals.shop.example"  # the broker's URL in the recipes
THEME_CHECK_APP_CONFIG = "node_modules/@shopify/theme-check-node/configs/theme-app-extension.yml"
# The module's servers and Chromium start once, on one xdist worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("recipes-shopify")


def node() -> str:
    found = shutil.which("node")
    assert found, "node is not installed: run bash scripts/setup --test"
    for package in ("@shopify/theme-check-node", "liquidjs"):
        assert (CLIENT / "node_modules" / package).exists(), "run bash scripts/setup --test"
    return found


def test_shopify_app_has_the_app_proxy_and_its_scope() -> None:
    """shopify.app.toml asks for write_app_proxy and proxies <prefix>/<subpath> to the broker's
    /shopify, which the block's default proxy path matches."""
    app = tomllib.loads((SHOPIFY / "shopify.app.toml").read_text())
    assert "write_app_proxy" in app["access_scopes"]["scopes"].split(",")
    proxy = app["app_proxy"]
    assert proxy["url"] == f"{DOC_BROKER}/shopify"
    setting = {s["id"]: s for s in block_schema()["settings"]}["proxy_path"]
    assert setting["default"] == f"/{proxy['prefix']}/{proxy['subpath']}"


def block_schema() -> dict[str, Any]:
    found = re.search(r"{%\s*schema\s*%}(.*?){%\s*endschema\s*%}", BLOCK.read_text(), re.S)
    assert found, "the block has no {% schema %}"
    schema: dict[str, Any] = json.loads(found.group(1))
    return schema


def test_shopify_block_pins_no_version() -> None:
    """The block names no broker version, no integrity and no hard-coded proxy path: the
    loader reads the version and hash from the manifest, the proxy path is a setting."""
    block = BLOCK.read_text()
    body = block.split("{% schema %}")[0]
    assert not re.search(r"/static/\d|sha384-|/apps/referrals/token", block)
    assert "block.settings.proxy_path" in body
    schema = block_schema()
    assert (schema["target"], schema["javascript"]) == ("section", LOADER.name)
    loader = LOADER.read_text()
    assert "/static/manifest.json" in loader and "integrity" in loader


# Runs Shopify's theme checker over a theme app extension, offline: its docs updater would
# download Shopify's latest Liquid docs, so its HTTP client is refused and the docs bundled with
# the package are used.
THEME_CHECK = """
const Module = require("node:module");
const load = Module._load;
Module._load = function (request, ...rest) {
  if (request === "node-fetch") return async () => { throw new Error("offline"); };
  return load.call(this, request, ...rest);
};
const { themeCheckRun } = require("@shopify/theme-check-node");
const [root, config] = process.argv.slice(1);
themeCheckRun(root, config, () => {}).then(({ theme, offenses }) => console.log(JSON.stringify({
  files: theme.map((file) => file.uri),
  offenses: offenses.map((o) => `${o.check}: ${o.message} (${o.uri})`),
})));
"""


def theme_check(root: Path, cache: Path) -> dict[str, list[str]]:
    done = subprocess.run(
        [node(), "-e", THEME_CHECK, str(root), THEME_CHECK_APP_CONFIG],
        cwd=CLIENT,
        env={"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(cache), "HOME": str(cache)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def test_shopify_extension_passes_shopifys_theme_check(tmp_path: Path) -> None:
    """@shopify/theme-check-node, with its theme-app-extension configuration, finds nothing in
    the extension, and does find the faults of a broken copy (so the check is live)."""
    checked = theme_check(EXTENSION, tmp_path / "cache")
    assert [uri.rsplit("/", 1)[-1] for uri in checked["files"]] == [BLOCK.name]
    assert checked["offenses"] == []
    broken = tmp_path / "broken"
    shutil.copytree(EXTENSION, broken)
    block = broken / "blocks" / BLOCK.name
    block.write_text(block.read_text().replace("| escape }}", "| escapes }}"))
    (broken / "assets" / LOADER.name).unlink()
    offenses = theme_check(broken, tmp_path / "cache")["offenses"]
    assert any(o.startswith("UnknownFilter") for o in offenses), offenses
    assert any(o.startswith("AssetSizeAppBlockJavaScript") for o in offenses), offenses


# Renders the block as Shopify does, with liquidjs: {% schema %} is settings, not output.
RENDER = """
const { Liquid } = require("liquidjs");
const [file, context] = process.argv.slice(1);
const source = require("node:fs").readFileSync(file, "utf8")
  .replace(/{%-?\\s*schema\\s*-?%}[\\s\\S]*?{%-?\\s*endschema\\s*-?%}/, "");
new Liquid({ strictFilters: true }).parseAndRender(source, JSON.parse(context))
  .then((html) => process.stdout.write(html));
"""


def render_block(context: dict[str, Any]) -> str:
    done = subprocess.run(
        [node(), "-e", RENDER, str(BLOCK), json.dumps(context)],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def liquid_context(broker: str, proxy_path: str, signed_in: bool = True) -> dict[str, Any]:
    settings = {
        "broker_url": broker,
        "bubblehouse_shop": SHOP,
        "proxy_path": proxy_path,
        "colours": "auto",
        "incentive": "Give €10 & get €10",
    }
    return {
        "customer": {"id": 820001} if signed_in else None,
        "block": {"settings": settings, "shopify_attributes": 'data-shopify-editor-block="{}"'},
        "request": {"locale": {"iso_code": "de"}},
        "cart": {"currency": {"iso_code": "EUR"}},
    }


def test_block_renders_the_widget_for_signed_in_customers_only() -> None:
    """Rendered, the block is the element with the settings' broker, shop, token URL under the
    configured proxy path, the store's language and currency; for a visitor, nothing."""
    html = render_block(liquid_context(DOC_BROKER, "/tools/rewards"))
    for attribute in (
        f'broker="{DOC_BROKER}"',
        f'shop="{SHOP}"',
        'token-url="/tools/rewards/token"',
        'lang="de"',
        'currency="EUR"',
    ):
        assert attribute in html
    assert '<p slot="incentive">Give €10 &amp; get €10</p>' in html
    assert render_block(liquid_context(DOC_BROKER, "/tools/rewards", signed_in=False)).strip() == ""


# --- The block in Chromium: Shopify's page, its app proxy, the broker, the sandbox -----------

APP_SECRET = "shpss_recipe0123456789abcdef0123456789"
STORE = "recipe-store.myshopify.com"
PROXY_PATH = "/a/rewards"  # a merchant's own prefix and subpath, not the default
CUSTOMER = "820001"


@dataclass(frozen=True)
class Store:
    broker: str
    storefront: str


def shopify_store(broker: str) -> Starlette:
    """What Shopify does for the block: a page with the rendered block and the block's
    JavaScript asset (a deferred script), and the app proxy, which signs the request the way
    Shopify documents and forwards it to the broker's /shopify/token."""
    block = render_block(liquid_context(broker, PROXY_PATH))
    http = httpx2.AsyncClient(timeout=30, limits=KEEPALIVE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with http:
            yield

    async def page(request: Request) -> Response:
        return HTMLResponse(
            f"""<!doctype html><html lang="de"><head><meta charset="utf-8"><title>Konto</title>
<script src="/extensions/assets/{LOADER.name}" defer></script></head>
<body><main><h1>Mein Konto</h1>{block}</main></body></html>"""
        )

    async def asset(request: Request) -> Response:
        return Response(LOADER.read_bytes(), media_type="text/javascript")

    async def app_proxy(request: Request) -> Response:
        params = {
            "shop": STORE,
            "logged_in_customer_id": CUSTOMER,
            "path_prefix": PROXY_PATH,
            "timestamp": str(int(time.time())),
        }
        message = "".join(f"{name}={value}" for name, value in sorted(params.items()))
        signature = hmac.new(APP_SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()
        query = urlencode({**params, "signature": signature})
        answer = await http.get(f"{broker}/shopify/token?{query}")
        return Response(answer.content, answer.status_code, media_type="application/json")

    routes = [
        Route("/", page),
        Route(f"/extensions/assets/{LOADER.name}", asset),
        Route(f"{PROXY_PATH}/token", app_proxy),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    """Sandbox, broker (the store's origin allowed, the Shopify route on) and the store."""
    keys = {"key-a": base64.b64decode(SECRET_A), "key-b": base64.b64decode(SECRET_B)}
    port = free_port()
    with serve_app(create_sandbox_app(SandboxConfig(shop=SHOP, keys=keys))) as sandbox:
        settings = make_settings(
            BROKER_UPSTREAM_URL=sandbox.url,
            BROKER_CORS_ORIGINS=f"http://127.0.0.1:{port}",
            BROKER_SHOPIFY_SECRET=APP_SECRET,
            BROKER_SHOPIFY_SHOP=STORE,
        )
        with (
            serve_app(create_app(settings)) as broker,
            serve_app(shopify_store(broker.url), port=port) as shop,
        ):
            yield Store(broker.url, shop.url)


@pytest.mark.browser
@pytest.mark.slow
def test_block_loads_the_current_widget_with_its_integrity(browser: Browser, store: Store) -> None:
    """In Chromium, the rendered block and its loader load the widget the broker's manifest
    names, with its integrity; the widget gets its token through the app proxy at the merchant's
    own path, reads the history and sends a referral."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(store.storefront + "/")
        widget = page.locator("referral-widget")
        expect(widget.locator("ul[part=history]")).to_have_attribute("aria-busy", "false")
        expect(widget.locator("[part=error-state]")).to_be_hidden()
        manifest = httpx2.get(f"{store.broker}/static/manifest.json", timeout=10).json()
        entry = manifest["files"]["referral-widget.js"]
        loaded = page.evaluate(
            "[...document.querySelectorAll('script[type=module]')]"
            ".map((s) => [s.src, s.integrity, s.crossOrigin])"
        )
        assert loaded == [[store.broker + entry["path"], entry["integrity"], "anonymous"]]
        widget.get_by_label("Teilen per").select_option("sms")
        widget.get_by_role("button", name="Einladung senden").click()
        expect(widget.locator("[part=referral]")).to_have_count(1)
        assert errors == []
    finally:
        context.close()
