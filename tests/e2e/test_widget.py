"""<referral-widget> in a real headless Chromium, on a storefront of another origin than the broker.

Three real servers on loopback: the sandbox (Bubblehouse), the broker (CORS for the storefront
only) and a storefront whose page is the widget, loaded from the broker's versioned URL with its
SRI hash, and whose ``/token`` route mints customer tokens as a merchant's server would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import httpx2
import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from playwright.sync_api import Route as PlaywrightRoute
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from broker.web.app import create_app
from broker_dev.sandbox import SandboxConfig, create_sandbox_app
from tests.servers import free_port, serve_app
from tests.support import ISSUER_KEY, KEEPALIVE, SECRET_A, SECRET_B, SHOP, make_settings

# One group for xdist's loadgroup: the module's Chromium and servers start once, on one worker.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-widget")]

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "clients" / "js" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts"  # the docs' screenshots are copies of these
SHOP_TEXT = "Referrals are paused until Monday. Thank you for your patience!"
PAGE_STYLE = """body { font-family: Georgia, serif; margin: 24px; max-width: 720px; }
@media (max-width: 480px) { body { margin: 12px; } }
@media (prefers-color-scheme: dark) { body { background: #121212; color: #eee; } }
"""
# Colours a shop sets on the element (every documented colour property), light and dark.
SHOP_STYLES = {
    "": "",
    "page-dark": ":root { color-scheme: dark; }",
    "shop-light": """referral-widget { --referral-widget-bg: #fffaf2; --referral-widget-fg: #2b1d0e;
  --referral-widget-muted: #5e4a36; --referral-widget-border: #8c7862;
  --referral-widget-accent: #7a1fa2; --referral-widget-accent-fg: #ffffff;
  --referral-widget-error: #a4161a; --referral-widget-success: #1b6b2a;
  --referral-widget-row-bg: #fff3e0; --referral-widget-focus: #7a1fa2; }
body { background: #fffaf2; color: #2b1d0e; }""",
    "shop-dark": """referral-widget { --referral-widget-bg: #10202b; --referral-widget-fg: #f2f5f7;
  --referral-widget-muted: #b9c6cf; --referral-widget-border: #6d8796;
  --referral-widget-accent: #ffd166; --referral-widget-accent-fg: #10202b;
  --referral-widget-error: #ffb3a8; --referral-widget-success: #9be3a8;
  --referral-widget-row-bg: #17303f; --referral-widget-focus: #ffd166; }
body { background: #10202b; color: #f2f5f7; }""",
}


STOREFRONT_DOC = ROOT / "docs" / "storefront-client.md"
DOC_BROKER = "https://referrals.shop.example"  # the broker's URL in the docs' examples


def documented_csp(broker_url: str) -> str:
    """The Content-Security-Policy that docs/storefront-client.md tells a shop to send, with this
    test's broker in place of the docs' example."""
    found = re.search(r"```\nContent-Security-Policy: (.*?)```", STOREFRONT_DOC.read_text(), re.S)
    assert found, "docs/storefront-client.md has no Content-Security-Policy block"
    return " ".join(found.group(1).split()).replace(DOC_BROKER, broker_url)


@dataclass(frozen=True)
class Stack:
    broker: str
    sandbox: str
    storefront: str
    http: httpx2.Client  # the test's own calls to the servers, over one client for the module


def storefront_app(broker_url: str) -> Starlette:
    """The merchant's shop: a page with the widget, and a token route on its own origin; its
    server calls the broker over one client for its lifetime, as a merchant's server would."""
    http = httpx2.AsyncClient(timeout=30, limits=KEEPALIVE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with http:
            yield

    async def page(request: Request) -> Response:
        manifest = (await http.get(f"{broker_url}/static/manifest.json")).json()
        widget = manifest["files"]["referral-widget.js"]
        query = request.query_params
        customer = query.get("customer", "demo-widget")
        lang = query.get("lang", "en")
        attributes = {
            "broker": query.get("broker", broker_url),
            "shop": SHOP,
            "token-url": None if query.get("token") == "none" else f"/token?customer={customer}",
            **{name: query.get(name) for name in ("channels", "theme", "currency", "timeout")},
        }
        tag = " ".join(f'{name}="{value}"' for name, value in attributes.items() if value)
        incentive = query.get("incentive")
        slot = f'<p slot="incentive">{incentive}</p>' if incentive else ""
        # One tag: the widget is one module with the client inside, all covered by its integrity.
        strict = query.get("csp") == "documented"
        style = (
            "" if strict else f"<style>{PAGE_STYLE}{SHOP_STYLES[query.get('colours', '')]}</style>"
        )
        html = f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>A storefront</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<script type="module" src="{broker_url}{widget["path"]}" integrity="{widget["integrity"]}"
        crossorigin="anonymous"></script>
{style}
</head><body><main><h1>My account</h1>
<referral-widget {tag}>{slot}</referral-widget>
</main></body></html>"""
        headers = {"Content-Security-Policy": documented_csp(broker_url)} if strict else {}
        return HTMLResponse(html, headers=headers)

    async def token(request: Request) -> Response:
        customer = request.query_params["customer"]
        if customer == "broken-token-url":  # a merchant's route that fails
            return HTMLResponse("<h1>Server error</h1>", status_code=500)
        if customer == "signed-out":  # as Shopify's app proxy answers for a visitor
            problem = {"id": "customer_not_logged_in", "status": 401}
            return JSONResponse(problem, status_code=401, media_type="application/problem+json")
        answer = await http.post(
            f"{broker_url}/tokens",
            json={"customer_id": customer},
            headers={"Authorization": f"Bearer {ISSUER_KEY}"},
        )
        body = answer.json()
        return JSONResponse(
            {"token": body["token"], "expires_at": body["expires_at"]},
            headers={"Cache-Control": "no-store"},
        )

    return Starlette(routes=[Route("/", page), Route("/token", token)], lifespan=lifespan)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Sandbox, broker (CORS for the storefront only) and the storefront, on three ports."""
    keys = {"key-a": base64.b64decode(SECRET_A), "key-b": base64.b64decode(SECRET_B)}
    shop_port = free_port()
    with serve_app(create_sandbox_app(SandboxConfig(shop=SHOP, keys=keys))) as sandbox:
        settings = make_settings(
            BROKER_UPSTREAM_URL=sandbox.url,
            BROKER_CORS_ORIGINS=f"http://127.0.0.1:{shop_port}",
            BROKER_UPSTREAM_TIMEOUT="3",
        )
        with (
            serve_app(create_app(settings)) as broker,
            serve_app(storefront_app(broker.url), port=shop_port) as shop,
            httpx2.Client(timeout=30, limits=KEEPALIVE) as http,
        ):
            yield Stack(broker.url, sandbox.url, shop.url, http)


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A fresh context; the test fails on any uncaught script error or console error."""
    context = browser.new_context(viewport={"width": 760, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    stack.http.delete(f"{stack.sandbox}/_sandbox/faults")
    assert errors == []


# Record the widget's events, as a merchant's page would listen for them.
EVENT_NAMES = (
    "referrals-loaded",
    "referral-sent",
    "referral-error",
    "referral-link-copied",
    "referral-shared",
)
RECORD_EVENTS = """
window.widgetEvents = [];
for (const name of NAMES) {
  document.addEventListener(name, (event) => window.widgetEvents.push({
    name, composed: event.composed, bubbles: event.bubbles, detail: event.detail,
  }));
}
""".replace("NAMES", json.dumps(list(EVENT_NAMES)))


def shop_url(stack: Stack, customer: str, **query: str) -> str:
    """The storefront's page for ``customer``, with the page's and the widget's options."""
    return f"{stack.storefront}/?" + urlencode({"customer": customer, **query})


def open_shop(
    page: Page, stack: Stack, customer: str, lang: str = "en", channels: str = "", **query: str
) -> Locator:
    """Open the storefront for ``customer`` and wait until the widget has read the history."""
    page.add_init_script(RECORD_EVENTS)
    page.goto(shop_url(stack, customer, lang=lang, channels=channels, **query))
    widget = page.locator("referral-widget")
    expect(widget.locator("ul[part=history]")).to_have_attribute("aria-busy", "false")
    return widget


def events(page: Page, name: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = page.evaluate("window.widgetEvents")
    return [event for event in seen if event["name"] == name]


def refer2_calls(stack: Stack) -> int:
    """How many Refer2 calls reached the sandbox (Bubblehouse) so far."""
    calls: dict[str, int] = stack.http.get(f"{stack.sandbox}/_sandbox/calls").json()
    return calls.get("Refer2", 0)


def broker_calls(page: Page, function: str) -> list[dict[str, str]]:
    """The headers of every ``function`` call the page makes to the broker, as they happen."""
    seen: list[dict[str, str]] = []

    def record(request: Any) -> None:
        if request.method == "POST" and request.url.endswith(f"/{function}"):
            seen.append(request.headers)

    page.on("request", record)
    return seen


def test_history_is_shown(page: Page, stack: Stack) -> None:
    """The customer's history appears with status, channel, masked destination, dates, reward."""
    widget = open_shop(page, stack, "demo-history", currency="EUR")
    rows = widget.locator("[part=referral]")
    expect(rows).to_have_count(5)
    rewarded = rows.filter(has_text="500 points")
    expect(rewarded).to_contain_text("Approved")
    expect(rewarded).to_contain_text("Email")
    expect(rewarded).to_contain_text("Sent ")
    expect(rewarded).to_contain_text("Joined ")
    expect(rewarded).not_to_contain_text("friend@example.com")  # masked by Bubblehouse
    expect(rows.filter(has_text="Reward: €10.00, Code THANKS-10")).to_have_count(1)
    summary = widget.locator("[part=summary]")
    expect(summary).to_contain_text("4 referrals")  # the shared link's two rows are one
    expect(summary).to_contain_text("4 friends joined")
    expect(summary).to_contain_text("500 points, €10.00 earned")
    expect(widget.get_by_role("status")).to_have_text("5 referrals")  # said, not shown
    assert widget.get_by_role("status").bounding_box()["height"] <= 1  # type: ignore[index]
    loaded = events(page, "referrals-loaded")
    assert len(loaded) == 1
    assert (loaded[0]["bubbles"], loaded[0]["composed"]) == (True, True)
    assert len(loaded[0]["detail"]["referrals"]) == 5


def test_send_through_the_form_shows_the_new_row(page: Page, stack: Stack) -> None:
    """A WhatsApp send adds its row at once, offers the share link, and fires referral-sent."""
    widget = open_shop(page, stack, "widget-sender")
    expect(widget.locator("[part=referral]")).to_have_count(0)
    widget.get_by_label("Share by").select_option("whatsapp")
    expect(widget.get_by_label("Friend's email")).to_be_hidden()
    widget.get_by_role("button", name="Send invitation").click()
    expect(widget.locator("[part=referral]")).to_have_count(1)
    expect(widget.locator("[part=referral].new")).to_contain_text("WhatsApp")
    expect(widget.locator("[part=referral].new")).to_contain_text("Invited")
    link = widget.get_by_role("link", name="Open WhatsApp")
    expect(link).to_have_attribute("href", re.compile(r"^https://"))
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    sent = events(page, "referral-sent")
    assert len(sent) == 1
    assert sent[0]["detail"]["referral"]["channel"] == "whatsapp"

    widget.get_by_label("Share by").select_option("email")
    widget.get_by_label("Friend's email").fill("not-an-address")
    widget.get_by_role("button", name="Send invitation").click()
    expect(widget.get_by_role("alert")).to_have_text("Please enter a valid email address.")
    expect(widget.get_by_label("Friend's email")).to_have_attribute("aria-invalid", "true")
    assert events(page, "referral-error")[-1]["detail"]["id"] == "invalid_input"
    widget.get_by_label("Friend's email").fill("friend.of.widget@example.com")
    widget.get_by_role("button", name="Send invitation").click()
    expect(widget.locator("[part=referral]")).to_have_count(2)
    expect(widget.locator("[part=referral].new")).to_contain_text("Email")
    expect(widget.locator("[role=alert]")).to_be_empty()

    widget.get_by_label("Share by").select_option("qr-code")
    widget.get_by_role("button", name="Send invitation").click()
    expect(widget.get_by_role("img", name="QR code for your referral link")).to_be_visible()
    expect(widget.locator("[part=referral]")).to_have_count(3)


def test_the_new_row_survives_a_reload(page: Page, stack: Stack) -> None:
    """After a send, a fresh page's history has the new referral (the broker read-your-writes)."""
    widget = open_shop(page, stack, "widget-reloader")
    widget.get_by_label("Share by").select_option("telegram")
    widget.get_by_role("button", name="Send invitation").click()
    expect(widget.locator("[part=referral]")).to_have_count(1)
    page.reload()
    expect(page.locator("referral-widget [part=referral]")).to_have_count(1)
    expect(page.locator("referral-widget [part=referral]")).to_contain_text("Telegram")


# A page-side stub at the fetch boundary: Refer2 answers with a share_action shape that the
# widget has never seen (the sandbox only makes the four it knows), with a hostile URL in it.
UNKNOWN_SHARE_ACTION = """
const realFetch = window.fetch;
window.fetch = async (url, init) => {
  const response = await realFetch(url, init);
  if (!String(url).endsWith("/Refer2") || !response.ok) return response;
  const body = await response.json();
  body.share_action = { type: "launch_confetti", url: "javascript:alert(1)", colours: [1, 2] };
  return new Response(JSON.stringify(body), { status: 200, headers: response.headers });
};
"""


def test_unfamiliar_share_action_becomes_a_plain_link(page: Page, stack: Stack) -> None:
    """A share_action shape the widget does not know gives a plain https link, no script error."""
    page.add_init_script(UNKNOWN_SHARE_ACTION)
    widget = open_shop(page, stack, "widget-unknown")
    widget.get_by_label("Share by").select_option("custom-social")
    widget.get_by_role("button", name="Send invitation").click()
    expect(widget.locator("[part=referral]")).to_have_count(1)
    link = widget.locator("[part=share-link]")
    expect(link).to_have_count(1)
    href = link.get_attribute("href") or ""
    assert href.startswith("http://") or href.startswith("https://")
    assert link.inner_text() == href
    assert "javascript:" not in widget.locator("[part=share]").inner_html()
    sent = events(page, "referral-sent")
    assert sent[0]["detail"]["share_action"]["type"] == "launch_confetti"


# Until the broker passes Bubblehouse's 4xx message on as upstream_message (issue 11.1, another
# branch), the page adds it from the sandbox's own text; with that broker, this is a no-op.
UPSTREAM_MESSAGE = """
const realFetch = window.fetch;
window.fetch = async (url, init) => {
  const response = await realFetch(url, init);
  if (!String(url).endsWith("/Refer2") || response.status !== 422) return response;
  const body = await response.json();
  body.upstream_message ??= %s;
  return new Response(JSON.stringify(body), { status: 422, headers: response.headers });
};
"""


def test_bubblehouse_refusal_shows_the_shop_text(page: Page, stack: Stack) -> None:
    """A Refer2 refused by Bubblehouse shows the shop's own words in an alert, not a guess."""
    page.add_init_script(UPSTREAM_MESSAGE % json.dumps(SHOP_TEXT))
    widget = open_shop(page, stack, "widget-refused")
    fault = {
        "status": 422,
        "id": "referral_program_disabled",
        "message": SHOP_TEXT,
        "times": 1,
        "functions": ["Refer2"],
    }
    stack.http.post(f"{stack.sandbox}/_sandbox/faults", json=fault).raise_for_status()
    widget.get_by_label("Share by").select_option("sms")
    widget.get_by_role("button", name="Send invitation").click()
    expect(widget.get_by_role("alert")).to_have_text(SHOP_TEXT)
    expect(widget.locator("[role=status]")).to_be_empty()
    expect(widget.locator("[part=referral]")).to_have_count(0)
    problem = events(page, "referral-error")[-1]["detail"]
    assert (problem["id"], problem["status"]) == ("referral_program_disabled", 422)


@pytest.mark.parametrize(
    ("lang", "button", "label", "status"),
    [
        ("en", "Send invitation", "Share by", "Approved"),
        ("de", "Einladung senden", "Teilen per", "Bestätigt"),
        ("fr", "Envoyer l'invitation", "Partager par", "Validé"),
        ("es", "Enviar invitación", "Compartir por", "Aprobado"),
        ("it", "Invia invito", "Condividi tramite", "Approvato"),
        ("nl", "Uitnodiging versturen", "Delen via", "Goedgekeurd"),
        ("pt", "Enviar convite", "Compartilhar por", "Aprovado"),
    ],
)
def test_seven_languages(
    page: Page, stack: Stack, lang: str, button: str, label: str, status: str
) -> None:
    """The seven languages follow the page's language, dates included."""
    widget = open_shop(page, stack, "demo-lang", lang)
    expect(widget.get_by_role("button", name=button)).to_be_visible()
    expect(widget.get_by_label(label)).to_be_visible()
    expect(widget.locator("[part=referral]").filter(has_text=status)).not_to_have_count(0)
    assert widget.locator("section").get_attribute("lang") == lang


def test_merchant_wording_and_lang_attribute(page: Page, stack: Stack) -> None:
    """The lang attribute wins over the page's; the messages property replaces built-in words."""
    widget = open_shop(page, stack, "demo-wording", "en")
    widget.evaluate(
        "(el) => { el.setAttribute('lang', 'de'); el.messages = { send: 'Jetzt einladen' }; }"
    )
    expect(widget.get_by_role("button", name="Jetzt einladen")).to_be_visible()
    expect(widget.get_by_label("Teilen per")).to_be_visible()


def test_changes_apply_in_place(page: Page, stack: Stack) -> None:
    """messages, lang and theme change the words and colours without a new read or lost text."""
    reads = broker_calls(page, "CustomerReferrals2")
    widget = open_shop(page, stack, "demo-in-place")
    assert len(reads) == 1
    widget.get_by_label("Friend's email").fill("half.typed@exam")
    widget.evaluate(
        """(el) => { el.messages = { de: { send: 'Jetzt einladen' } };
        el.setAttribute('lang', 'de'); el.setAttribute('theme', 'dark'); }"""
    )
    expect(widget.get_by_role("button", name="Jetzt einladen")).to_be_visible()
    expect(widget.get_by_label("E-Mail-Adresse deines Freundes")).to_have_value("half.typed@exam")
    expect(widget.locator("[part=summary]")).to_contain_text("4 Empfehlungen")
    background = widget.evaluate(
        "(el) => getComputedStyle(el.shadowRoot.querySelector('.panel')).backgroundColor"
    )
    assert background == "rgb(31, 31, 31)"
    page.wait_for_timeout(300)
    assert len(reads) == 1
    assert events(page, "referrals-loaded").__len__() == 1


def test_no_empty_history_while_loading(page: Page, stack: Stack) -> None:
    """While the history loads: a busy skeleton, never the empty text; that comes after."""
    slow = {"delay": 1.5, "times": 1, "functions": ["CustomerReferrals2"]}
    stack.http.post(f"{stack.sandbox}/_sandbox/faults", json=slow).raise_for_status()
    page.goto(shop_url(stack, "widget-slow-empty"))
    widget = page.locator("referral-widget")
    history = widget.locator("ul[part=history]")
    expect(history).to_have_attribute("aria-busy", "true")
    expect(widget.locator("[part=skeleton]").first).to_be_visible()
    expect(widget).not_to_contain_text("You have not referred anyone yet.")
    expect(history).to_have_attribute("aria-busy", "false", timeout=10_000)
    expect(widget.locator("[part=empty]")).to_have_text("You have not referred anyone yet.")
    expect(widget.locator("[part=summary]")).to_contain_text("0 referrals")


# The broker's answer replaced at the network boundary: what a page sees when something between
# it and the broker fails (the fulfilled answers carry CORS headers, as the broker's would).
PROBLEM = "application/problem+json"
FAILURES: dict[str, tuple[int, str, str] | None] = {
    "500": (500, PROBLEM, json.dumps({"id": "internal_error", "status": 500, "message": "bug"})),
    "html": (502, "text/html", "<h1>Bad gateway</h1>"),
    "dropped": None,
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_failed_load_is_an_error_with_retry(page: Page, stack: Stack, failure: str) -> None:
    """A failed read (500, HTML, dropped connection) says so with Retry, never the empty text."""
    answer = FAILURES[failure]

    def fail(route: PlaywrightRoute) -> None:
        if route.request.method != "POST":
            route.continue_()
        elif answer is None:
            route.abort("connectionreset")
        else:
            status, content_type, body = answer
            headers = {"Access-Control-Allow-Origin": stack.storefront}
            route.fulfill(status=status, headers=headers, content_type=content_type, body=body)

    page.route(f"{stack.broker}/api/**/CustomerReferrals2", fail)
    widget = open_shop(page, stack, "demo-failing")
    state = widget.locator("[part=error-state]")
    words = "can't be reached" if failure == "dropped" else "unavailable right now"
    expect(state.get_by_role("alert")).to_contain_text(words)
    expect(widget).not_to_contain_text("You have not referred anyone yet.")
    expect(widget.locator("[part=referral]")).to_have_count(0)
    assert events(page, "referral-error")[-1]["detail"]["id"] in {
        "internal_error",
        "unexpected_response",
        "broker_unreachable",
    }
    page.unroute(f"{stack.broker}/api/**/CustomerReferrals2")
    state.get_by_role("button", name="Try again").click()
    expect(widget.locator("[part=referral]")).to_have_count(5)
    expect(state).to_be_hidden()


# Rows that are not objects, as a broken upstream might send them.
ODD_ROWS = """
const realFetch = window.fetch;
window.fetch = async (url, init) => {
  const response = await realFetch(url, init);
  if (!String(url).endsWith("/CustomerReferrals2") || !response.ok) return response;
  const body = await response.json();
  body.referrals.splice(1, 0, null, "row", 42, ["x"]);
  return new Response(JSON.stringify(body), { status: 200, headers: response.headers });
};
"""


def test_rows_that_are_not_objects_are_skipped(page: Page, stack: Stack) -> None:
    """A null (or any non-object) row in the history is skipped; the widget does not freeze."""
    page.add_init_script(ODD_ROWS)
    widget = open_shop(page, stack, "demo-null-row")
    expect(widget.locator("[part=referral]")).to_have_count(5)
    expect(widget.locator("[part=summary]")).to_contain_text("4 referrals")


# Refer2's answer given a long link, as a shop with long tracking links would have it.
LONG_LINK = """
const realFetch = window.fetch;
window.fetch = async (url, init) => {
  const response = await realFetch(url, init);
  if (!String(url).endsWith("/Refer2") || !response.ok) return response;
  const body = await response.json();
  const link = body.referral.link + "?utm=" + "x".repeat(%d);
  body.referral.link = link;
  body.share_action = { type: "show_qr_code", link, data: link };
  return new Response(JSON.stringify(body), { status: 200, headers: response.headers });
};
"""


@pytest.mark.parametrize("length", [400, 3000])
def test_long_share_link_is_a_success_sent_once(page: Page, stack: Stack, length: int) -> None:
    """A send whose link is too long for a small QR code succeeds, once, however often clicked."""
    page.add_init_script(LONG_LINK % length)
    sends = broker_calls(page, "Refer2")
    widget = open_shop(page, stack, f"widget-long-link-{length}")
    before = refer2_calls(stack)
    widget.get_by_label("Share by").select_option("qr-code")
    widget.get_by_role("button", name="Send invitation").click()
    expect(widget.get_by_role("status")).to_have_text("Your invitation is ready.")
    expect(widget.locator("[part=share] [part=link]")).to_have_value(re.compile(rf"x{{{length}}}$"))
    qr = widget.get_by_role("img", name="QR code for your referral link")
    expect(qr).to_have_count(1 if length < 2000 else 0)  # beyond QR version 40: the link alone
    expect(widget.get_by_role("alert")).to_have_count(0)
    page.wait_for_timeout(2100)  # past the client's double-click window: a real second click
    widget.get_by_role("button", name="Send invitation").click()  # the same referral again
    expect(widget.get_by_role("status")).to_have_text("Your invitation is ready.")
    expect(widget.locator("[part=referral]")).to_have_count(1)
    assert refer2_calls(stack) - before == 1
    assert len(sends) == 2
    assert sends[0]["idempotency-key"] == sends[1]["idempotency-key"]
    assert not [e for e in events(page, "referral-error")]


def test_send_is_busy_then_answers_within_its_timeout(page: Page, stack: Stack) -> None:
    """While a send is out the button is disabled with a spinner; a broker that does not
    answer within timeout="2" says referrals are unavailable, not an endless spinner; the event
    names the timeout."""
    widget = open_shop(page, stack, "widget-slow-send", timeout="2")
    slow = {"delay": 6, "times": 1, "functions": ["Refer2"]}
    stack.http.post(f"{stack.sandbox}/_sandbox/faults", json=slow).raise_for_status()
    widget.get_by_label("Share by").select_option("sms")
    send = widget.locator("[part=send]")
    send.click()
    expect(send).to_be_disabled()
    expect(send).to_have_attribute("aria-busy", "true")
    expect(send).to_have_text("Sending…")
    expect(send.locator(".spinner")).to_be_visible()
    expect(widget.get_by_role("alert")).to_have_text(
        "Referrals are unavailable right now.", timeout=4_000
    )
    expect(send).to_be_enabled()
    expect(send).to_have_text("Send invitation")
    assert events(page, "referral-error")[-1]["detail"]["id"] == "timeout"


def test_one_referral_is_singular(page: Page, stack: Stack) -> None:
    """After the first send the summary says "1 referral" (Intl.PluralRules), in French too."""
    widget = open_shop(page, stack, "widget-plural")
    widget.get_by_label("Share by").select_option("telegram")
    widget.get_by_role("button", name="Send invitation").click()
    summary = widget.locator("[part=summary-sent]")
    expect(summary).to_have_text("1 referral")
    widget.evaluate("(el) => el.setAttribute('lang', 'fr')")
    expect(summary).to_have_text("1 parrainage")


def test_german_errors_in_german(page: Page, stack: Stack) -> None:
    """On a German page every failure is the widget's German text, chosen by id and status."""
    misconfigured = json.dumps(
        {
            "id": "upstream_misconfigured",
            "status": 502,
            "message": "The token was rejected (sandbox fault).",
        }
    )
    cors = {"Access-Control-Allow-Origin": stack.storefront}
    page.route(
        f"{stack.broker}/api/**/CustomerReferrals2",
        lambda route: (
            route.fulfill(status=502, headers=cors, content_type=PROBLEM, body=misconfigured)
            if route.request.method == "POST"
            else route.continue_()
        ),
    )
    widget = open_shop(page, stack, "demo-deutsch", "de")
    expect(widget.locator("[part=error-state]")).to_contain_text(
        "Empfehlungen sind gerade nicht verfügbar."
    )
    expect(widget).not_to_contain_text("token")
    page.unroute(f"{stack.broker}/api/**/CustomerReferrals2")
    widget.get_by_role("button", name="Erneut versuchen").click()
    expect(widget.locator("[part=referral]")).to_have_count(5)

    no_match = {"status": 404, "id": "no_customers_match_customer_identity", "times": 1}
    stack.http.post(
        f"{stack.sandbox}/_sandbox/faults", json={**no_match, "functions": ["Refer2"]}
    ).raise_for_status()
    widget.get_by_label("Teilen per").select_option("sms")
    widget.get_by_role("button", name="Einladung senden").click()
    expect(widget.get_by_role("alert")).to_have_text(
        "Dein Konto wurde nicht gefunden. Melde dich ab und wieder an."
    )
    limited = {"rate_limit": True, "times": 1, "functions": ["Refer2"]}
    stack.http.post(f"{stack.sandbox}/_sandbox/faults", json=limited).raise_for_status()
    widget.get_by_role("button", name="Einladung senden").click()
    expect(widget.get_by_role("alert")).to_contain_text("Zu viele Versuche.")
    expect(widget.get_by_role("alert")).to_contain_text(re.compile(r"in \d+ Sekunden? erneut"))


AXE_RUN = """
async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target) }));
}
"""


@pytest.mark.parametrize(
    ("system", "theme", "colours"),
    [
        ("light", "light", ""),
        ("dark", "dark", ""),
        ("dark", "light", "shop-light"),  # a light shop seen by a shopper whose system is dark
        ("light", "dark", "shop-dark"),
        ("dark", "auto", ""),
    ],
)
def test_no_serious_accessibility_violations(
    page: Page, stack: Stack, system: Literal["light", "dark"], theme: str, colours: str
) -> None:
    """axe-core finds no serious violation (colour contrast included) in either theme, with the
    built-in colours and with a shop's, history, link, form, share and error shown."""
    page.emulate_media(color_scheme=system)
    widget = open_shop(page, stack, f"demo-axe-{theme}-{colours}", theme=theme, colours=colours)
    expect(widget.locator("[part=get-link], [part=link]").first).to_be_visible()
    widget.get_by_label("Share by").select_option("instagram")
    widget.get_by_role("button", name="Send invitation").click()
    expect(widget.locator("[part=share]").get_by_role("button", name="Copy link")).to_be_visible()
    page.add_script_tag(path=str(AXE))
    assert page.evaluate(AXE_RUN) == []
    widget.get_by_label("Share by").select_option("email")
    widget.get_by_role("button", name="Send invitation").click()
    expect(widget.get_by_role("alert")).not_to_have_text("")
    assert page.evaluate(AXE_RUN) == []


def test_auto_theme_follows_the_page_color_scheme(page: Page, stack: Stack) -> None:
    """theme="auto" follows the page's declared color-scheme before the system's preference."""
    page.emulate_media(color_scheme="light")
    widget = open_shop(page, stack, "demo-auto", theme="auto", colours="page-dark")
    background = widget.evaluate(
        "(el) => getComputedStyle(el.shadowRoot.querySelector('.panel')).backgroundColor"
    )
    assert background == "rgb(31, 31, 31)"


def test_works_under_the_documented_content_security_policy(page: Page, stack: Stack) -> None:
    """With exactly the policy docs/storefront-client.md gives a shop (no inline style, scripts
    and calls named), the widget loads with its integrity, is fully styled, reads the history
    and draws a QR code, and the browser reports no violation."""
    policy = documented_csp(stack.broker)
    assert {d.split()[0] for d in policy.split("; ")} >= {"script-src", "connect-src", "style-src"}
    page.add_init_script(
        "window.violations = []; document.addEventListener('securitypolicyviolation', "
        "(e) => window.violations.push(e.violatedDirective + ' ' + e.blockedURI))"
    )
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    widget = open_shop(page, stack, "demo-csp", csp="documented")
    assert page.evaluate("window.violations") == []
    send = widget.get_by_role("button", name="Send invitation")
    assert send.evaluate("(el) => getComputedStyle(el).backgroundColor") == "rgb(11, 87, 208)"
    box = send.bounding_box()
    assert box is not None and box["height"] >= 44
    expect(widget.locator("[part=referral]")).to_have_count(5)
    widget.get_by_label("Share by").select_option("qr-code")
    send.click()
    expect(widget.get_by_role("img", name="QR code for your referral link")).to_be_visible()
    expect(widget.locator("[part=referral]")).to_have_count(6)
    assert page.evaluate("window.violations") == []
    assert [text for text in console if "Content Security Policy" in text] == []
    scripts = page.evaluate(
        "[...document.scripts].map((s) => [s.src, s.integrity, s.crossOrigin, s.type])"
    )
    widget_path = stack.http.get(f"{stack.broker}/static/manifest.json").json()["files"][
        "referral-widget.js"
    ]
    assert len(scripts) == 1  # one tag, whose integrity covers all the widget runs
    assert scripts[0][0] == stack.broker + widget_path["path"]
    assert scripts[0][1:] == [widget_path["integrity"], "anonymous", "module"]


def test_keyboard_only_sending(page: Page, stack: Stack) -> None:
    """With the keyboard alone: Tab to the channel, pick email, type the address, Enter sends."""
    widget = open_shop(page, stack, "widget-keyboard")
    page.locator("h1").click()  # focus starts on the page, outside the widget
    focused = "() => document.activeElement?.shadowRoot?.activeElement?.getAttribute('part')"
    seen = []
    for _ in range(8):  # past the link panel, to the form
        page.keyboard.press("Tab")
        seen.append(page.evaluate(focused))
        if seen[-1] == "channel":
            break
    assert seen[-1] == "channel", seen
    page.keyboard.press("Home")  # "email" is the first channel
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "destination"
    page.keyboard.type("keyboard.friend@example.com")
    page.keyboard.press("Enter")
    expect(widget.locator("[part=referral]")).to_have_count(1)
    expect(widget.locator("[part=referral].new")).to_contain_text("Email")
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "send"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate(focused) == "channel"
    page.keyboard.type("wh")  # type-ahead to WhatsApp; the email field hides
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "send"
    page.keyboard.press("Enter")
    expect(widget.locator("[part=referral]")).to_have_count(2)
    expect(widget.locator("[part=referral].new")).to_contain_text("WhatsApp")


# Navigation to a share site is stopped at the page (a capture listener), after the widget saw
# the click; navigator.share is stubbed where a test asks for the share sheet.
NO_NAVIGATION = """
document.addEventListener("click", (event) => {
  if (event.composedPath().some((n) => n.tagName === "A")) event.preventDefault();
}, true);
"""
SHARE_SHEET = "navigator.share = async (data) => { window.sharedWith = data; };"


def test_link_panel_copy_and_share(page: Page, stack: Stack) -> None:
    """ "Get my link" makes one Refer2 on the shopper's click (none on load); copy and the share
    links fire referral-link-copied and referral-shared."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.add_init_script(NO_NAVIGATION)
    before = refer2_calls(stack)
    widget = open_shop(page, stack, "widget-link-panel", incentive="Give €10, get €10.")
    expect(widget.get_by_text("Give €10, get €10.")).to_be_visible()
    page.wait_for_timeout(200)
    assert refer2_calls(stack) == before  # never a Refer2 on page load
    widget.get_by_role("button", name="Get my link").click()
    box = widget.locator("[part=your-link] [part=link]")
    expect(box).to_have_value(re.compile(r"^https://"))
    link = box.input_value()
    assert refer2_calls(stack) == before + 1
    widget.locator("[part=your-link]").get_by_role("button", name="Copy link").click()
    expect(widget.get_by_role("status")).to_have_text("Link copied.")
    assert events(page, "referral-link-copied")[-1]["detail"] == {"url": link}
    assert page.evaluate("navigator.clipboard.readText()") == link
    widget.locator("[part=share-channel][data-channel=whatsapp]").click()
    shared = events(page, "referral-shared")[-1]
    assert shared["detail"] == {"channel": "whatsapp", "url": link}
    assert (shared["bubbles"], shared["composed"]) == (True, True)

    page.reload()  # the link is the history's now: no click needed
    expect(widget.locator("[part=your-link] [part=link]")).to_have_value(link)
    assert refer2_calls(stack) == before + 1


def test_share_sheet_where_the_browser_has_one(page: Page, stack: Stack) -> None:
    """With Web Share, the link panel offers the share sheet and reports referral-shared."""
    page.add_init_script(SHARE_SHEET)
    widget = open_shop(page, stack, "demo-share-sheet")
    widget.locator("[part=your-link]").get_by_role("button", name="Share…").click()
    expect(widget.locator("[part=share-channel]")).to_have_count(0)
    shared = page.evaluate("window.sharedWith")
    assert shared["url"].startswith("https://")
    assert events(page, "referral-shared")[-1]["detail"] == {
        "channel": "share-sheet",
        "url": shared["url"],
    }


@pytest.mark.parametrize(
    ("query", "error_id"),
    [
        ({"broker": "http://127.0.0.1:9"}, "broker_unreachable"),
        ({"token": "none"}, "no_token_source"),
        ({"customer": "broken-token-url"}, "token_source_failed"),
    ],
)
def test_developer_mistakes_are_reported(
    page: Page, stack: Stack, query: dict[str, str], error_id: str
) -> None:
    """An unreachable broker (or one that refuses the origin), no token source, or a failing
    token source: a visible line, a console warning and a referral-error with its own id."""
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    page.add_init_script(RECORD_EVENTS)
    page.goto(shop_url(stack, **{"customer": "demo-developer", **query}))
    widget = page.locator("referral-widget")
    developer = widget.locator("[part=developer-message]")
    expect(developer).to_contain_text(error_id)
    expect(widget.locator("[part=error-state]")).to_be_visible()
    expect(widget).not_to_contain_text("You have not referred anyone yet.")
    assert events(page, "referral-error")[-1]["detail"]["id"] == error_id
    assert any(error_id in warning for warning in warnings)
    box = widget.bounding_box()
    assert box is not None and box["height"] > 100


def test_signed_out_visitor_is_asked_to_sign_in(page: Page, stack: Stack) -> None:
    """A token-url that refuses (nobody signed in) gives a sign-in alert and a referral-error."""
    widget = open_shop(page, stack, "signed-out")
    expect(widget.get_by_role("alert")).to_have_text("Sign in to refer your friends.")
    assert events(page, "referral-error")[-1]["detail"]["id"] == "missing_token"
    expect(widget.locator("[part=referral]")).to_have_count(0)
    expect(widget.locator("[part=developer-message]")).to_be_hidden()


def test_channels_attribute_limits_the_choice(page: Page, stack: Stack) -> None:
    """channels="email,whatsapp,custom-personal" offers exactly those, in that order."""
    widget = open_shop(page, stack, "widget-channels", channels="email,whatsapp,custom-personal")
    options = widget.locator("select[part=channel] option")
    expect(options).to_have_text(["Email", "WhatsApp", "Personal message"])


# Fifty referrals, as a keen customer's history.
LONG_HISTORY = """
const realFetch = window.fetch;
window.fetch = async (url, init) => {
  const response = await realFetch(url, init);
  if (!String(url).endsWith("/CustomerReferrals2") || !response.ok) return response;
  const body = await response.json();
  const rows = body.referrals;
  body.referrals = Array.from({ length: 50 }, (_, i) => ({ ...rows[i % rows.length],
    referral_bhid: "r" + i }));
  return new Response(JSON.stringify(body), { status: 200, headers: response.headers });
};
"""


def test_long_history_shows_ten_rows_then_more(page: Page, stack: Stack) -> None:
    """Fifty referrals show ten rows and "Show more"; on a phone the page stays short."""
    page.set_viewport_size({"width": 375, "height": 740})
    page.add_init_script(LONG_HISTORY)
    widget = open_shop(page, stack, "demo-long")
    expect(widget.locator("[part=referral]")).to_have_count(10)
    assert page.evaluate("document.documentElement.scrollHeight") < 2600
    widget.get_by_role("button", name="Show more").click()
    expect(widget.locator("[part=referral]")).to_have_count(20)
    expect(widget.locator("[part=summary-sent]")).to_have_text("50 referrals")


def shoot(widget: Locator, name: str) -> None:
    """Save a screenshot of the widget as test-artifacts/widget-<name>.png (the docs' copies)."""
    ARTIFACTS.mkdir(exist_ok=True)
    widget.screenshot(path=str(ARTIFACTS / f"widget-{name}.png"), animations="disabled")


@pytest.mark.parametrize(
    ("width", "scheme"), [(760, "light"), (760, "dark"), (375, "light"), (375, "dark")]
)
def test_screenshots_for_the_docs(
    page: Page, stack: Stack, width: int, scheme: Literal["light", "dark"]
) -> None:
    """The widget after a send, in its theme, on a desktop and a phone (docs/widget-*.png)."""
    page.set_viewport_size({"width": width, "height": 900})
    page.emulate_media(color_scheme=scheme, reduced_motion="reduce")
    widget = open_shop(
        page,
        stack,
        f"demo-screenshot-{width}",
        theme=scheme,
        currency="EUR",
        incentive="Give your friends €10 off their first order, and get €10 when they buy.",
    )
    widget.get_by_label("Share by").select_option("qr-code")
    widget.get_by_role("button", name="Send invitation").click()
    expect(widget.get_by_role("img", name="QR code for your referral link")).to_be_visible()
    expect(widget.locator("[part=referral]")).to_have_count(6)
    background = widget.evaluate(
        "(el) => getComputedStyle(el.shadowRoot.querySelector('.panel')).backgroundColor"
    )
    assert background == ("rgb(255, 255, 255)" if scheme == "light" else "rgb(31, 31, 31)")
    shoot(widget, f"{'phone' if width < 500 else 'desktop'}-{scheme}")


def test_screenshots_of_the_states(page: Page, stack: Stack) -> None:
    """Loading, error and long-history screenshots for the docs (docs/widget-*.png)."""
    page.emulate_media(reduced_motion="reduce")
    slow = {"delay": 3, "times": 1, "functions": ["CustomerReferrals2"]}
    stack.http.post(f"{stack.sandbox}/_sandbox/faults", json=slow).raise_for_status()
    page.goto(shop_url(stack, "demo-states"))
    widget = page.locator("referral-widget")
    expect(widget.locator("[part=skeleton]").first).to_be_visible()
    shoot(widget, "loading")
    stack.http.delete(f"{stack.sandbox}/_sandbox/faults")
    unavailable = {"status": 503, "times": 2, "functions": ["CustomerReferrals2"]}
    stack.http.post(f"{stack.sandbox}/_sandbox/faults", json=unavailable).raise_for_status()
    page.goto(shop_url(stack, "widget-states-error"))
    expect(widget.locator("[part=error-state]")).to_be_visible(timeout=10_000)
    shoot(widget, "error")
    page.set_viewport_size({"width": 375, "height": 740})
    page.add_init_script(LONG_HISTORY)
    page.goto(shop_url(stack, "demo-states-long", currency="EUR"))
    expect(widget.locator("[part=referral]")).to_have_count(10)
    shoot(widget, "phone-long-history")
