"""The platform recipes of docs/recipes.md, whole files under docs/recipes/: the Shopify app
(its app proxy and scope, the theme app extension's block, checked by Shopify's own theme
checker, rendered and run in Chromium against a real broker) and the Magento module (its PHP
through ``php -l``, its XML parsed, the Content Security Policy naming the broker)."""

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
import xml.etree.ElementTree as ET
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
from tests.stack import READ_PATH
from tests.support import ISSUER_KEY, SECRET_A, SECRET_B, SHOP, make_settings

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js"
RECIPES = ROOT / "docs" / "recipes"
SHOPIFY = RECIPES / "shopify"
EXTENSION = SHOPIFY / "extensions" / "referral-widget"
BLOCK = EXTENSION / "blocks" / "referral-widget.liquid"
LOADER = EXTENSION / "assets" / "referral-widget-loader.js"
MAGENTO = RECIPES / "magento" / "app" / "code" / "Merchant" / "Referrals"
DOC_BROKER = "https://referrals.shop.example"  # the broker's URL in the recipes
THEME_CHECK_APP_CONFIG = "node_modules/@shopify/theme-check-node/configs/theme-app-extension.yml"
# The module's servers and Chromium start once, on one xdist worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("platform-recipes")


def node() -> str:
    found = shutil.which("node")
    assert found, "node is not installed: run bash scripts/setup --test"
    for package in ("@shopify/theme-check-node", "liquidjs"):
        assert (CLIENT / "node_modules" / package).exists(), "run bash scripts/setup --test"
    return found


def test_recipes_link_every_platform_file() -> None:
    """docs/recipes.md links every file under docs/recipes/, so none is left undocumented."""
    text = (ROOT / "docs" / "recipes.md").read_text()
    files = sorted(p.relative_to(ROOT / "docs") for p in RECIPES.rglob("*") if p.is_file())
    assert len(files) >= 12
    missing = [str(path) for path in files if f"]({path})" not in text]
    assert missing == []


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
    http = httpx2.AsyncClient(timeout=30)

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


# --- Magento --------------------------------------------------------------------------------


def test_magento_php_passes_php_lint() -> None:
    """Every PHP file and template of the Magento module passes ``php -l``."""
    php = shutil.which("php")
    assert php, "php is not installed: run bash scripts/setup --test"
    sources = sorted([*MAGENTO.rglob("*.php"), *MAGENTO.rglob("*.phtml")])
    assert len(sources) >= 4
    for source in sources:
        done = subprocess.run(
            [php, "-l", str(source)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_magento_xml_is_well_formed() -> None:
    """Every XML file of the module parses, and names the schema Magento validates it with."""
    files = sorted(MAGENTO.rglob("*.xml"))
    assert len(files) >= 5
    schema = "{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation"
    for file in files:
        root = ET.parse(file).getroot()  # noqa: S314 (the repository's own files)
        assert root.get(schema, "").startswith("urn:magento:"), file


def test_magento_csp_allows_the_broker_for_scripts_and_calls() -> None:
    """csp_whitelist.xml lists the broker's origin (config.xml's default) under script-src and
    connect-src, the two directives the widget needs."""
    policies = ET.parse(MAGENTO / "etc" / "csp_whitelist.xml").getroot()  # noqa: S314
    hosts = {
        policy.get("id"): [value.text for value in policy.iter("value")]
        for policy in policies.iter("policy")
    }
    assert hosts == {"script-src": [DOC_BROKER], "connect-src": [DOC_BROKER]}
    config = ET.parse(MAGENTO / "etc" / "config.xml").getroot()  # noqa: S314
    assert config.findtext("default/referrals/broker/url") == DOC_BROKER


def test_magento_token_route_matches_the_template() -> None:
    """The route the template's token-url names (referrals/token) is the controller's; the
    template writes the manifest's integrity on the script tag."""
    routes = ET.parse(MAGENTO / "etc" / "frontend" / "routes.xml").getroot()  # noqa: S314
    route = routes.find("router/route")
    module = routes.find("router/route/module")
    assert route is not None and module is not None
    assert (route.get("frontName"), module.get("name")) == ("referrals", "Merchant_Referrals")
    assert (MAGENTO / "Controller" / "Token" / "Index.php").is_file()
    assert "getUrl('referrals/token')" in (MAGENTO / "ViewModel" / "Widget.php").read_text()
    template = (MAGENTO / "view" / "frontend" / "templates" / "widget.phtml").read_text()
    assert "'integrity' => $script['integrity']" in template
    assert "$widget->tokenUrl()" in template


# The few Magento classes the controller uses, as small stand-ins; the HTTP client is a real
# one (PHP's stream wrapper), so the controller really calls the broker's POST /tokens.
MAGENTO_STANDINS = r"""<?php
namespace Magento\Framework\App\Action { interface HttpGetActionInterface {} }
namespace Magento\Store\Model { interface ScopeInterface { const SCOPE_STORE = 'store'; } }
namespace Magento\Framework\App\Config {
    class ScopeConfigInterface {
        public function __construct(private array $values) {}
        public function getValue(string $path, string $scope) { return $this->values[$path]; }
    }
}
namespace Magento\Framework\App {
    class DeploymentConfig {
        public function __construct(private array $values) {}
        public function get(string $path) { return $this->values[$path]; }
    }
}
namespace Magento\Customer\Model {
    class Customer {
        public function __construct(private string $email) {}
        public function getEmail() { return $this->email; }
    }
    class Session {
        public function __construct(private ?string $id, private string $email) {}
        public function isLoggedIn(): bool { return $this->id !== null; }
        public function getCustomerId() { return $this->id; }
        public function getCustomer(): Customer { return new Customer($this->email); }
    }
}
namespace Magento\Framework\Controller\Result {
    class Json {
        public array $headers = []; public int $status = 200; public $data = null;
        public function setHeader($name, $value, $replace = false) {
            $this->headers[$name] = $value;
            return $this;
        }
        public function setHttpResponseCode($code) { $this->status = $code; return $this; }
        public function setData($data) { $this->data = $data; return $this; }
    }
    class JsonFactory { public function create(): Json { return new Json(); } }
}
namespace Magento\Framework\HTTP\Client {
    class Curl {
        public array $sent = []; private array $headers = []; private int $timeout = 30;
        private int $status = 0; private string $body = '';
        public function setTimeout($seconds) { $this->timeout = $seconds; }
        public function addHeader($name, $value) { $this->headers[] = "$name: $value"; }
        public function post($uri, $body) {
            $this->sent[] = $uri;
            $context = stream_context_create(['http' => [
                'method' => 'POST', 'header' => implode("\r\n", $this->headers), 'content' => $body,
                'timeout' => $this->timeout, 'ignore_errors' => true]]);
            $answer = file_get_contents($uri, false, $context);
            if ($answer === false) { throw new \Exception("unreachable: $uri"); }
            $this->body = $answer;
            preg_match('#^HTTP/\S+ (\d+)#', $http_response_header[0], $status);
            $this->status = (int) $status[1];
        }
        public function getStatus() { return $this->status; }
        public function getBody() { return $this->body; }
    }
    class CurlFactory {
        public array $made = [];
        public function create(): Curl { return $this->made[] = new Curl(); }
    }
}
namespace {
    require $argv[1];
    [$_, $controller, $broker, $issuerKey, $customer] = $argv;
    $curls = new Magento\Framework\HTTP\Client\CurlFactory();
    $action = new Merchant\Referrals\Controller\Token\Index(
        new Magento\Customer\Model\Session($customer === '' ? null : $customer, 'mage@example.com'),
        new Magento\Framework\Controller\Result\JsonFactory(),
        $curls,
        new Magento\Framework\App\Config\ScopeConfigInterface(
            ['referrals/broker/url' => "$broker/"]
        ),
        new Magento\Framework\App\DeploymentConfig(['referrals/issuer_key' => $issuerKey])
    );
    $result = $action->execute();
    $calls = array_merge([], ...array_map(fn ($curl) => $curl->sent, $curls->made));
    echo json_encode(['status' => $result->status, 'headers' => $result->headers,
                      'data' => $result->data, 'calls' => $calls]);
}
"""


def run_controller(tmp_path: Path, broker: str, issuer_key: str, customer: str) -> Any:
    php = shutil.which("php")
    assert php, "php is not installed: run bash scripts/setup --test"
    driver = tmp_path / "driver.php"
    driver.write_text(MAGENTO_STANDINS)
    controller = MAGENTO / "Controller" / "Token" / "Index.php"
    done = subprocess.run(
        [php, str(driver), str(controller), broker, issuer_key, customer],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_magento_controller_mints_for_the_session_customer(
    wire_broker: Any, tmp_path: Path
) -> None:
    """The Magento controller, run by PHP against a real broker: for a signed-in customer it
    answers the broker's token (which the broker then accepts for that customer) with
    Cache-Control private, no-store; a visitor gets 401 and the broker is not called; a wrong
    issuer key is a 502 that shows the browser nothing of the broker's answer."""
    answer = run_controller(tmp_path, wire_broker.url, ISSUER_KEY, "mage-42")
    assert answer["status"] == 200, answer
    assert answer["headers"]["Cache-Control"] == "private, no-store"
    assert answer["calls"] == [f"{wire_broker.url}/tokens"]
    assert set(answer["data"]) == {"token", "expires_at"}
    read = wire_broker.client.post(
        READ_PATH,
        json={"customer": {"shopid": "mage-42", "email": "MAGE@example.com"}},
        headers={"Authorization": f"Bearer {answer['data']['token']}"},
    )
    assert read.status_code == 200, read.text
    visitor = run_controller(tmp_path, wire_broker.url, ISSUER_KEY, "")
    assert (visitor["status"], visitor["data"]["id"], visitor["calls"]) == (
        401,
        "customer_not_logged_in",
        [],
    )
    assert visitor["headers"]["Cache-Control"] == "private, no-store"
    refused = run_controller(tmp_path, wire_broker.url, "x" * 40, "mage-42")
    assert (refused["status"], refused["data"]) == (502, {"id": "token_not_minted", "status": 502})
