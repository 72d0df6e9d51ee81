"""The browser side in a real headless Chromium: referrals.js, the demo storefront (a referral's
whole life included), and CORS.

Four real servers on loopback, shared by the module's tests (each test has its own browser context
and its own customers): the sandbox (Bubblehouse), the broker, the demo merchant app (an allowed
origin) and a page on another port that the broker does not allow.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import Response as PlaywrightResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from broker.web.app import create_app
from broker_dev.demo import create_demo_app
from broker_dev.sandbox import SandboxConfig, create_sandbox_app
from tests.servers import free_port, serve_app
from tests.support import ISSUER_KEY, KEEPALIVE, SECRET_A, SECRET_B, SHOP, make_settings

# One group for xdist's loadgroup: the module's Chromium and servers start once, on one worker.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-demo")]

VERSION = "v2023061"
STATIC = Path(__file__).resolve().parents[2] / "clients" / "js"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass(frozen=True)
class Stack:
    broker: str
    sandbox: str
    demo: str
    other: str
    http: httpx2.Client  # the test's own calls to the servers, over one client for the module


def other_origin_app() -> Starlette:
    """A storefront the broker does not allow, with its own copy of referrals.js."""

    async def page(request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>Another shop</title><p>Another shop</p>")

    async def client(request: Request) -> Response:
        return FileResponse(STATIC / "referrals.js", media_type="text/javascript")

    return Starlette(
        routes=[Route("/", page), Route("/referrals.js", client)],
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Sandbox, broker (CORS for the demo origin only), demo app and a disallowed origin."""
    keys = {"key-a": base64.b64decode(SECRET_A), "key-b": base64.b64decode(SECRET_B)}
    demo_port = free_port()
    with serve_app(create_sandbox_app(SandboxConfig(shop=SHOP, keys=keys))) as sandbox:
        settings = make_settings(
            BROKER_UPSTREAM_URL=sandbox.url,
            BROKER_CORS_ORIGINS=f"http://127.0.0.1:{demo_port}",
            BROKER_UPSTREAM_TIMEOUT="3",
        )
        with serve_app(create_app(settings)) as broker:
            demo_app = create_demo_app(
                broker_url=broker.url,
                sandbox_url=sandbox.url,
                issuer_key=ISSUER_KEY,
                shop=SHOP,
                version=VERSION,
            )
            with (
                serve_app(demo_app, port=demo_port) as demo,
                serve_app(other_origin_app()) as other,
                httpx2.Client(timeout=30, limits=KEEPALIVE) as http,
            ):
                yield Stack(broker.url, sandbox.url, demo.url, other.url, http)


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A fresh browser context and page; fails the test on uncaught page errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    stack.http.delete(f"{stack.sandbox}/_sandbox/faults")
    assert errors == []


def shoot(page: Page, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


def refer2_calls(stack: Stack) -> int:
    calls: dict[str, int] = stack.http.get(f"{stack.sandbox}/_sandbox/calls").json()
    return calls.get("Refer2", 0)


def add_fault(stack: Stack, **fault: Any) -> None:
    stack.http.post(f"{stack.sandbox}/_sandbox/faults", json=fault).raise_for_status()


def customer_token(stack: Stack, customer_id: str) -> str:
    answer = stack.http.post(
        f"{stack.broker}/tokens",
        json={"customer_id": customer_id},
        headers={"Authorization": f"Bearer {ISSUER_KEY}"},
    )
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


def expired_token(customer_id: str) -> str:
    """A correctly signed customer token that expired two minutes ago (beyond the leeway)."""
    now = int(time.time())
    claims = {
        "aud": "BH",
        "sub": f"{SHOP}/{customer_id}",
        "iat": now - 600,
        "exp": now - 120,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(
        claims, base64.b64decode(SECRET_A), algorithm="HS256", headers={"kid": "key-a"}
    )


def open_demo(page: Page, stack: Stack) -> None:
    page.goto(stack.demo)
    page.wait_for_selector("body[data-ready=true]")


def sign_in(page: Page, customer: str) -> None:
    if customer in ("alice", "bob"):
        page.get_by_label(customer.capitalize(), exact=True).check()
    else:
        page.get_by_label("Someone else").check()
        page.get_by_label("Customer id").fill(customer)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#session")).to_contain_text(f"Signed in as {customer}")


# Load the client from the broker's origin inside the page, as a storefront does.
IMPORT_CLIENT = """
async ({ brokerUrl, shop }) => {
  window.lib = await import(`${brokerUrl}/static/referrals.js`);
  return Object.keys(window.lib).sort();
}
"""


def open_demo_origin(page: Page, stack: Stack) -> None:
    """A light document of the demo's origin (the one the broker allows), from the demo server on
    loopback: its config. The client-only tests need the origin, not the demo page's work."""
    page.goto(f"{stack.demo}/demo/config")


def import_client(page: Page, stack: Stack) -> None:
    exported = page.evaluate(IMPORT_CLIENT, {"brokerUrl": stack.broker, "shop": SHOP})
    assert {"createReferralsClient", "ReferralsError", "ERROR_IDS"} <= set(exported)


def test_demo_flow_end_to_end(page: Page, stack: Stack) -> None:
    """A merchant signs in as alice, sees her history, sends WhatsApp, email and QR referrals."""
    open_demo(page, stack)
    expect(page.locator("#connection")).to_contain_text(stack.broker)
    sign_in(page, "alice")

    rows = page.locator("#history-rows tr")
    expect(page.locator("#history-table")).to_be_visible()
    expect(rows.first).to_be_visible()
    before = rows.count()
    assert before >= 1
    expect(page.locator("#summary dt").first).to_be_visible()
    expect(page.locator("#history-rows .badge").first).to_be_visible()
    shoot(page, "demo-history.png")

    page.get_by_label("Channel").select_option("whatsapp")
    page.get_by_role("button", name="Send referral").click()
    share = page.locator("#send-result a", has_text="Open WhatsApp")
    expect(share).to_be_visible()
    assert share.get_attribute("target") == "_blank"
    assert (share.get_attribute("href") or "").startswith("https://")
    expect(rows).to_have_count(before + 1)
    expect(page.locator("#history-rows tr.new")).to_contain_text("WhatsApp")
    shoot(page, "demo-sent-whatsapp.png")

    page.get_by_label("Channel").select_option("email")
    page.get_by_role("button", name="Send referral").click()
    expect(page.locator("#send-result .problem, #send-result .notice")).to_contain_text(
        "friend's email"
    )
    page.get_by_label("Friend's email").fill("friend.of.alice@example.com")
    page.get_by_role("button", name="Send referral").click()
    expect(page.locator("#send-result")).to_contain_text("Nothing more to do")
    expect(rows).to_have_count(before + 2)
    new_row = page.locator("#history-rows tr.new")
    expect(new_row).to_contain_text("Email")
    expect(new_row).to_contain_text("@example.com")
    expect(new_row).not_to_contain_text("friend.of.alice@")  # destinations come back masked

    page.get_by_label("Channel").select_option("qr-code")
    page.get_by_role("button", name="Send referral").click()
    expect(page.locator("#send-result .qr pre")).to_be_visible()
    expect(page.locator("#send-result .qr-link")).to_contain_text("http")
    shoot(page, "demo-sent-qr.png")

    page.set_viewport_size({"width": 390, "height": 844})
    shoot(page, "demo-mobile.png")


def test_demo_explains_errors(page: Page, stack: Stack) -> None:
    """Each "explain errors" button shows the broker's error id, status and request id."""
    open_demo(page, stack)
    sign_in(page, "bob")
    result = page.locator("#error-result")
    expected = {
        "identity": ("customer_identity_does_not_match_token", "403"),
        "token": ("invalid_token", "401"),
        "rate-limit": ("rate_limit_exceeded", "429"),
        "failing": ("upstream_error", "502"),
        "timeout": ("upstream_timeout", "504"),
    }
    for scenario, (error_id, status) in expected.items():
        page.locator(f"[data-scenario={scenario}]").click()
        expect(result).to_have_attribute("data-done", scenario, timeout=15_000)
        box = result.locator(f".problem[data-error-id={error_id}]").first
        expect(box).to_be_visible()
        expect(box.locator("dd[data-field=status]")).to_have_text(status)
        expect(box.locator("dd[data-field='request id']")).not_to_have_text("—")
        if scenario == "rate-limit":
            expect(box.locator("dd[data-field='retry after']")).to_contain_text("s")
        if scenario == "token":
            expect(result).to_contain_text(
                "getToken was called 2 times (forceRefresh: false, true)"
            )
        shoot(page, f"demo-error-{scenario}.png")

    page.locator("[data-scenario=slow]").click()
    expect(result).to_have_attribute("data-done", "slow", timeout=15_000)
    expect(result).to_contain_text("Slow, but within the broker's timeout")


REFRESH_LIST = """
async ({ brokerUrl, shop, expired }) => {
  const calls = [];
  const client = window.lib.createReferralsClient({
    baseUrl: brokerUrl,
    shop,
    getToken: async ({ forceRefresh }) => {
      calls.push(forceRefresh);
      if (!forceRefresh) return expired;
      const r = await fetch("/demo/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ customer_id: "carol" }),
      });
      return (await r.json()).token;
    },
  });
  const data = await client.listReferrals();
  return { calls, isList: Array.isArray(data.referrals) };
}
"""


def test_client_refreshes_an_expired_token_once(page: Page, stack: Stack) -> None:
    """An expired token gets one getToken({forceRefresh: true}) and one retry, which succeeds."""
    open_demo_origin(page, stack)
    import_client(page, stack)
    direct = stack.http.post(
        f"{stack.broker}/api/{VERSION}/{SHOP}/CustomerReferrals2",
        json={},
        headers={"Authorization": f"Bearer {expired_token('carol')}"},
    )
    assert (direct.status_code, direct.json()["reason"]) == (401, "expired")

    outcome = page.evaluate(
        REFRESH_LIST, {"brokerUrl": stack.broker, "shop": SHOP, "expired": expired_token("carol")}
    )
    assert outcome == {"calls": [False, True], "isList": True}


REFRESH_SEND = """
async ({ brokerUrl, shop, expired, fresh }) => {
  const calls = [];
  const keys = [];
  const client = window.lib.createReferralsClient({
    baseUrl: brokerUrl,
    shop,
    getToken: async ({ forceRefresh }) => {
      calls.push(forceRefresh);
      return forceRefresh ? fresh : expired;
    },
    fetch: (url, init) => {
      keys.push(init.headers["Idempotency-Key"]);
      return fetch(url, init);
    },
  });
  try {
    const answer = await client.sendReferral({ channel: "telegram" });
    return { calls, keys, ok: Boolean(answer.referral) };
  } catch (error) {
    return { calls, keys, ok: false, id: error.id, reason: error.reason, status: error.status };
  }
}
"""


def test_client_refresh_keeps_the_idempotency_key(page: Page, stack: Stack) -> None:
    """A send refused for its token is retried once with a fresh token and the same key."""
    open_demo_origin(page, stack)
    import_client(page, stack)
    before = refer2_calls(stack)
    outcome = page.evaluate(
        REFRESH_SEND,
        {
            "brokerUrl": stack.broker,
            "shop": SHOP,
            "expired": expired_token("dan"),
            "fresh": customer_token(stack, "dan"),
        },
    )
    assert outcome["ok"] is True
    assert outcome["calls"] == [False, True]
    assert len(outcome["keys"]) == 2
    assert outcome["keys"][0] == outcome["keys"][1]
    assert refer2_calls(stack) == before + 1  # the refused attempt never reached Bubblehouse


def test_client_refreshes_only_once(page: Page, stack: Stack) -> None:
    """When the fresh token is refused too, the client gives up with invalid_token (no loop)."""
    open_demo_origin(page, stack)
    import_client(page, stack)
    outcome = page.evaluate(
        REFRESH_SEND,
        {
            "brokerUrl": stack.broker,
            "shop": SHOP,
            "expired": expired_token("erin"),
            "fresh": expired_token("erin"),
        },
    )
    assert outcome["calls"] == [False, True]
    assert (outcome["ok"], outcome["id"], outcome["reason"], outcome["status"]) == (
        False,
        "invalid_token",
        "expired",
        401,
    )


def test_double_click_sends_once(page: Page, stack: Stack) -> None:
    """A double click on "Send referral" in the demo makes one Refer2 at the sandbox."""
    open_demo(page, stack)
    sign_in(page, "frank")
    page.get_by_label("Channel").select_option("sms")
    before = refer2_calls(stack)
    page.get_by_role("button", name="Send referral").dblclick()
    expect(page.locator("#send-result .notice.ok")).to_be_visible()
    expect(page.locator("#history-rows tr.new")).to_contain_text("SMS")
    assert refer2_calls(stack) == before + 1


SEQUENTIAL_SENDS = """
async ({ brokerUrl, shop, token }) => {
  const client = window.lib.createReferralsClient({
    baseUrl: brokerUrl, shop, getToken: () => token,
  });
  const first = await client.sendReferral({ channel: "telegram" });
  const second = await client.sendReferral({ channel: "telegram" });
  await new Promise((resolve) => setTimeout(resolve, window.lib.DOUBLE_SEND_WINDOW_MS + 200));
  const later = await client.sendReferral({ channel: "telegram" });
  return { same: first === second, laterIsNew: later !== first };
}
"""


def test_second_click_after_a_fast_answer_sends_nothing(page: Page, stack: Stack) -> None:
    """An identical send right after the first answered reuses it; after the window it is new."""
    open_demo_origin(page, stack)
    import_client(page, stack)
    before = refer2_calls(stack)
    outcome = page.evaluate(
        SEQUENTIAL_SENDS,
        {"brokerUrl": stack.broker, "shop": SHOP, "token": customer_token(stack, "heidi")},
    )
    assert outcome == {"same": True, "laterIsNew": True}
    assert refer2_calls(stack) == before + 2


IDEMPOTENT_SENDS = """
async ({ brokerUrl, shop, token }) => {
  const client = window.lib.createReferralsClient({
    baseUrl: brokerUrl, shop, getToken: () => token,
  });
  const [a, b] = await Promise.all([
    client.sendReferral({ channel: "messenger" }),
    client.sendReferral({ channel: "messenger" }),
  ]);
  const key = crypto.randomUUID();
  const c = await client.sendReferral({ channel: "threads", idempotencyKey: key });
  const d = await client.sendReferral({ channel: "threads", idempotencyKey: key });
  return {
    concurrentSame: a.referral.referral_bhid === b.referral.referral_bhid,
    keyedSame: JSON.stringify(c) === JSON.stringify(d),
  };
}
"""


def test_identical_sends_reach_bubblehouse_once(page: Page, stack: Stack) -> None:
    """Two identical sends in flight share one request; a resent Idempotency-Key is replayed."""
    open_demo_origin(page, stack)
    import_client(page, stack)
    before = refer2_calls(stack)
    outcome = page.evaluate(
        IDEMPOTENT_SENDS,
        {"brokerUrl": stack.broker, "shop": SHOP, "token": customer_token(stack, "grace")},
    )
    assert outcome == {"concurrentSame": True, "keyedSame": True}
    assert refer2_calls(stack) == before + 2  # one messenger send, one threads send


SEND_AFTER_FAILURE = """
async ({ brokerUrl, shop, token }) => {
  const client = window.lib.createReferralsClient({
    baseUrl: brokerUrl, shop, getToken: () => token,
  });
  let failure;
  try {
    await client.sendReferral({ channel: "facebook" });
  } catch (error) {
    failure = {
      isReferralsError: error instanceof window.lib.ReferralsError,
      id: error.id, status: error.status, retryable: error.retryable,
      requestId: error.requestId, key: error.idempotencyKey,
    };
  }
  const answer = await client.sendReferral({ channel: "facebook" });
  return { failure, again: Boolean(answer.referral) };
}
"""


def test_send_is_not_retried_after_a_5xx(page: Page, stack: Stack) -> None:
    """A 502 reaches the caller after exactly one Refer2; trying again is the caller's choice."""
    open_demo_origin(page, stack)
    import_client(page, stack)
    add_fault(stack, status=500, times=1, functions=["Refer2"])
    before = refer2_calls(stack)
    outcome = page.evaluate(
        SEND_AFTER_FAILURE,
        {"brokerUrl": stack.broker, "shop": SHOP, "token": customer_token(stack, "heidi")},
    )
    failure = outcome["failure"]
    assert failure["isReferralsError"] is True
    assert (failure["id"], failure["status"], failure["retryable"]) == ("upstream_error", 502, True)
    assert failure["requestId"]
    assert failure["key"]
    assert outcome["again"] is True
    assert refer2_calls(stack) == before + 2  # the failed send once, the new send once


LOST_ANSWER = """
async ({ brokerUrl, shop, token }) => {
  let attempts = 0;
  let loseNext = true;
  const client = window.lib.createReferralsClient({
    baseUrl: brokerUrl, shop, getToken: () => token,
    // The request reaches the broker, then the connection drops before the answer arrives.
    fetch: async (url, init) => {
      attempts += 1;
      const response = await fetch(url, init);
      if (loseNext) {
        loseNext = false;
        throw new TypeError("Failed to fetch");
      }
      return response;
    },
  });
  let lost;
  try {
    await client.sendReferral({ channel: "whatsapp" });
  } catch (error) {
    lost = { id: error.id, status: error.status, key: error.idempotencyKey, attempts };
  }
  const answer = await client.sendReferral({
    channel: "whatsapp", idempotencyKey: lost.key,
  });
  return { lost, attempts, ok: Boolean(answer.referral) };
}
"""


def test_send_after_a_lost_answer_is_retried_with_its_key(page: Page, stack: Stack) -> None:
    """A network_error is not retried by the client; resending its key does not send twice."""
    open_demo_origin(page, stack)
    import_client(page, stack)
    before = refer2_calls(stack)
    outcome = page.evaluate(
        LOST_ANSWER,
        {"brokerUrl": stack.broker, "shop": SHOP, "token": customer_token(stack, "judy")},
    )
    lost = outcome["lost"]
    assert (lost["id"], lost["status"], lost["attempts"]) == ("network_error", 0, 1)
    assert lost["key"]
    assert outcome["attempts"] == 2
    assert outcome["ok"] is True
    assert refer2_calls(stack) == before + 1


READ_ERROR = """
async ({ url, token, body }) => {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
  const problem = await response.json();
  return {
    status: response.status,
    id: problem.id,
    bodyRequestId: problem.request_id,
    headerRequestId: response.headers.get("X-Request-ID"),
    retryAfter: response.headers.get("Retry-After"),
    contentType: response.headers.get("Content-Type"),
  };
}
"""


@pytest.mark.parametrize(
    ("status", "error_id"),
    [
        (401, "missing_token"),
        (401, "invalid_token"),
        (403, "customer_identity_does_not_match_token"),
        (404, "not_found"),
        (429, "rate_limit_exceeded"),
        (502, "upstream_error"),
    ],
)
def test_error_bodies_are_readable_from_an_allowed_origin(
    page: Page, stack: Stack, status: int, error_id: str
) -> None:
    """Page JavaScript on an allowed origin reads the error's id and its X-Request-ID header."""
    open_demo_origin(page, stack)
    customer = f"reader-{error_id}"
    token: str | None = customer_token(stack, customer)
    function, shop = "CustomerReferrals2", SHOP
    body: dict[str, object] = {}
    if error_id == "missing_token":
        token = None
    elif error_id == "invalid_token":
        token = expired_token(customer)
    elif error_id == "customer_identity_does_not_match_token":
        body = {"customer": {"shopid": "someone-else"}}
    elif error_id == "not_found":
        shop = "another-shop"
    elif error_id == "rate_limit_exceeded":
        function, body = "Refer2", {"channel": "sms"}
        add_fault(stack, rate_limit=True, times=1, functions=["Refer2"])
    elif error_id == "upstream_error":
        function, body = "Refer2", {"channel": "sms"}
        add_fault(stack, status=500, times=1, functions=["Refer2"])
    url = f"{stack.broker}/api/{VERSION}/{shop}/{function}"
    seen = page.evaluate(READ_ERROR, {"url": url, "token": token, "body": body})
    assert (seen["status"], seen["id"]) == (status, error_id)
    assert seen["headerRequestId"]
    assert seen["headerRequestId"] == seen["bodyRequestId"]
    assert seen["contentType"].startswith("application/problem+json")
    if status == 429:
        assert int(seen["retryAfter"]) >= 1


DISALLOWED = """
async ({ brokerUrl, shop, token }) => {
  const url = `${brokerUrl}/api/v2023061/${shop}/CustomerReferrals2`;
  const outcome = {};
  try {
    await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: "{}",
    });
    outcome.preflighted = "answered";
  } catch (error) {
    outcome.preflighted = error.name;
  }
  try {
    await fetch(url);
    outcome.simple = "answered";
  } catch (error) {
    outcome.simple = error.name;
  }
  const lib = await import("/referrals.js");
  const client = lib.createReferralsClient({ baseUrl: brokerUrl, shop, getToken: () => token });
  try {
    await client.listReferrals();
    outcome.client = "answered";
  } catch (error) {
    outcome.client = { id: error.id, status: error.status, cause: error.cause && error.cause.name };
  }
  return outcome;
}
"""


def test_fetch_fails_from_a_disallowed_origin(page: Page, stack: Stack) -> None:
    """From an origin not in BROKER_CORS_ORIGINS fetch fails (TypeError): network_error, 0."""
    page.goto(stack.other)
    outcome = page.evaluate(
        DISALLOWED,
        {"brokerUrl": stack.broker, "shop": SHOP, "token": customer_token(stack, "ivan")},
    )
    assert outcome == {
        "preflighted": "TypeError",
        "simple": "TypeError",
        "client": {"id": "network_error", "status": 0, "cause": "TypeError"},
    }


def test_issuer_key_never_reaches_the_page(page: Page, stack: Stack) -> None:
    """The demo page signs customers in through its server; no issuer key in what it loads."""
    responses: list[PlaywrightResponse] = []
    page.on("response", lambda response: responses.append(response))
    open_demo(page, stack)
    sign_in(page, "alice")
    expect(page.locator("#history-table")).to_be_visible()
    bodies = [response.text() for response in responses]
    assert any('"token"' in body for body in bodies)  # the login answer was seen
    assert not any(ISSUER_KEY in body for body in bodies)
    assert ISSUER_KEY not in page.content()


def test_demo_widget_page(page: Page, stack: Stack) -> None:
    """The demo's /widget page (three lines of HTML) shows the widget customer's history."""
    page.goto(f"{stack.demo}/widget")
    widget = page.locator("referral-widget")
    expect(widget.locator("ul[part=history]")).to_have_attribute("aria-busy", "false")
    expect(widget.locator("[part=referral]").first).to_be_visible()
    assert widget.locator("[part=referral]").count() >= 5
    expect(widget.get_by_role("button", name="Send invitation")).to_be_visible()


# A page-side stub at the fetch boundary: Bubblehouse answers with hostile or unfamiliar URLs.
HOSTILE_ANSWERS = """
const realFetch = window.fetch;
window.shareAction = { type: "open_url", url: "javascript:alert(document.domain)" };
window.fetch = async (url, init) => {
  const response = await realFetch(url, init);
  const fn = String(url).split("/").pop();
  if (!response.ok || (fn !== "Refer2" && fn !== "CustomerReferrals2")) return response;
  const body = await response.json();
  if (fn === "Refer2") body.share_action = window.shareAction;
  for (const row of body.referrals || []) row.link = "javascript:alert(1)";
  return new Response(JSON.stringify(body), { status: 200, headers: response.headers });
};
"""


def test_demo_links_only_http_urls(page: Page, stack: Stack) -> None:
    """The demo never makes a javascript: link an href, and handles an unknown share shape."""
    page.add_init_script(HOSTILE_ANSWERS)
    open_demo(page, stack)
    sign_in(page, "alice")
    expect(page.locator("#history-rows tr").first).to_be_visible()
    expect(page.locator("#history-rows")).to_contain_text("javascript:alert(1)")  # as text
    page.get_by_label("Channel").select_option("whatsapp")
    page.get_by_role("button", name="Send referral").click()
    expect(page.locator("#send-result .notice.ok")).to_be_visible()
    assert page.locator("a[href^='javascript']").count() == 0

    page.evaluate("window.shareAction = { type: 'launch_confetti', colours: [1, 2] }")
    page.get_by_label("Channel").select_option("telegram")
    page.get_by_role("button", name="Send referral").click()
    unknown = page.locator("#send-result [data-share=unknown]")
    expect(unknown).to_contain_text("launch_confetti")
    assert page.locator("a[href^='javascript']").count() == 0


# A referral's whole life on the demo page: the page sends a referral, then moves it on with its
# sandbox-only buttons, and the history shows each status.


def sign_in_and_send(page: Page, stack: Stack, customer: str) -> str:
    """Open the demo, sign ``customer`` in, send a social referral; its referral_bhid."""
    page.goto(stack.demo)
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("Someone else").check()
    page.get_by_label("Customer id").fill(customer)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#session")).to_contain_text(f"Signed in as {customer}")
    page.get_by_label("Channel").select_option("custom-social")
    page.get_by_role("button", name="Send referral").click()
    new_row = page.locator("#history-rows tr.new")
    expect(new_row).to_contain_text("Invited")
    bhid = new_row.get_attribute("data-referral")
    assert bhid
    page.evaluate("window.notReloaded = true")  # gone if the page reloads
    return bhid


def test_demo_walks_a_referral_from_invited_to_approved(page: Page, stack: Stack) -> None:
    """The row's buttons qualify (by keyboard) then approve the sent referral, without reload."""
    bhid = sign_in_and_send(page, stack, "life-approve")
    row = page.locator(f"#history-rows tr[data-referral='{bhid}']")
    expect(page.locator("#lifecycle-note")).to_contain_text("In production these changes come")
    expect(page.locator("#lifecycle-note")).to_contain_text("the webhook recipe")

    qualify = row.get_by_role("button", name="Mark qualified")
    qualify.focus()
    page.keyboard.press("Enter")
    expect(row.locator(".badge")).to_have_text("Qualified")
    expect(page.locator("#move-result .notice.ok")).to_contain_text("qualified")
    # Focus stays in the redrawn row, so a keyboard user goes on from there.
    assert page.evaluate(f"document.activeElement.closest('tr')?.dataset.referral === '{bhid}'")

    row.get_by_role("button", name="Approve").click()
    expect(row.locator(".badge")).to_have_text("Approved")
    expect(row.get_by_role("button", name="Approve")).to_have_count(0)  # already approved
    expect(row).to_contain_text("pts")  # the approval earned a reward
    assert page.evaluate("window.notReloaded") is True
    assert ISSUER_KEY not in page.content()


def test_demo_rejects_a_referral(page: Page, stack: Stack) -> None:
    """The "Reject" button on a sent referral shows it rejected in the history."""
    bhid = sign_in_and_send(page, stack, "life-reject")
    row = page.locator(f"#history-rows tr[data-referral='{bhid}']")
    row.get_by_role("button", name="Reject").click()
    expect(row.locator(".badge")).to_have_text("Rejected")
    assert page.evaluate("window.notReloaded") is True


def test_demo_shows_the_relays_refusal(page: Page, stack: Stack) -> None:
    """A referral that is not the signed-in customer's gets the relay's unknown_referral box."""
    bobs = stack.http.post(
        f"{stack.broker}/tokens",
        json={"customer_id": "bob"},
        headers={"Authorization": f"Bearer {ISSUER_KEY}"},
    ).json()["token"]
    history = stack.http.post(
        f"{stack.broker}/api/{VERSION}/{SHOP}/CustomerReferrals2",
        json={},
        headers={"Authorization": f"Bearer {bobs}"},
    ).json()["referrals"]
    bhid = sign_in_and_send(page, stack, "life-other")
    # At the network boundary, the page's own button is pointed at bob's referral.
    bobs_path = f"/demo/referrals/{history[0]['referral_bhid']}"
    page.route(
        f"{stack.demo}/demo/referrals/*",
        lambda route: route.continue_(url=stack.demo + bobs_path),
    )
    row = page.locator(f"#history-rows tr[data-referral='{bhid}']")
    row.get_by_role("button", name="Approve").click()
    problem = page.locator("#move-result .problem")
    expect(problem).to_have_attribute("data-error-id", "unknown_referral")
    expect(problem).to_contain_text("not one of the signed-in customer's referrals")
    expect(row.locator(".badge")).to_have_text("Invited")
    expect(row.get_by_role("button", name="Approve")).to_be_enabled()
