"""A referral's whole life on the demo page, in a real headless Chromium.

The sandbox, the broker (CORS for the demo origin) and the demo app on loopback: the page sends a
referral, then moves it on with its sandbox-only buttons, and the history shows each status.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest
from playwright.sync_api import Browser, Page, expect

from broker.app import create_app
from broker.demo import create_demo_app
from broker.sandbox import SandboxConfig, create_sandbox_app
from tests.servers import free_port, serve_app
from tests.support import ISSUER_KEY, SECRET_A, SECRET_B, SHOP, make_settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VERSION = "v2023061"


@dataclass(frozen=True)
class Stack:
    broker: str
    sandbox: str
    demo: str


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Sandbox, broker (CORS for the demo origin only) and the demo app."""
    keys = {"key-a": base64.b64decode(SECRET_A), "key-b": base64.b64decode(SECRET_B)}
    demo_port = free_port()
    with serve_app(create_sandbox_app(SandboxConfig(shop=SHOP, keys=keys))) as sandbox:
        settings = make_settings(
            BROKER_UPSTREAM_URL=sandbox.url,
            BROKER_CORS_ORIGINS=f"http://127.0.0.1:{demo_port}",
        )
        with serve_app(create_app(settings)) as broker:
            demo_app = create_demo_app(
                broker_url=broker.url,
                sandbox_url=sandbox.url,
                issuer_key=ISSUER_KEY,
                shop=SHOP,
                version=VERSION,
            )
            with serve_app(demo_app, port=demo_port) as demo:
                yield Stack(broker.url, sandbox.url, demo.url)


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A fresh browser context and page; fails the test on uncaught page errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == []


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
    bobs = httpx2.post(
        f"{stack.broker}/tokens",
        json={"customer_id": "bob"},
        headers={"Authorization": f"Bearer {ISSUER_KEY}"},
    ).json()["token"]
    history = httpx2.post(
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
