"""The demo merchant app over HTTP, against a real broker and sandbox (no browser)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest

from broker.web.app import create_app
from broker_dev.demo import create_demo_app
from broker_dev.sandbox import SandboxConfig, create_sandbox_app
from tests.servers import serve_app
from tests.support import ISSUER_KEY, SECRET_A, SECRET_B, SHOP, make_settings


@dataclass(frozen=True)
class Demo:
    url: str
    broker: str
    sandbox: str


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    """The sandbox, the broker and the demo app, each on its own loopback port."""
    keys = {"key-a": base64.b64decode(SECRET_A), "key-b": base64.b64decode(SECRET_B)}
    with serve_app(create_sandbox_app(SandboxConfig(shop=SHOP, keys=keys))) as sandbox:
        settings = make_settings(BROKER_UPSTREAM_URL=sandbox.url)
        with serve_app(create_app(settings)) as broker:
            app = create_demo_app(
                broker_url=broker.url + "/",
                sandbox_url=sandbox.url,
                issuer_key=ISSUER_KEY,
                shop=SHOP,
                version="v2023061",
            )
            with serve_app(app) as server:
                yield Demo(server.url, broker.url, sandbox.url)


def test_page_and_assets_are_served(demo: Demo) -> None:
    """GET / serves the page; its CSS and JS come from the demo app; nothing else does."""
    page = httpx2.get(demo.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="/demo.js"' in page.text
    assert httpx2.get(demo.url + "/demo.css").headers["content-type"].startswith("text/css")
    assert "javascript" in httpx2.get(demo.url + "/demo.js").headers["content-type"]
    assert httpx2.get(demo.url + "/settings.py").status_code == 404
    assert httpx2.get(demo.url + "/static/referrals.js").status_code == 404  # the broker serves it


def test_config_names_the_broker(demo: Demo) -> None:
    """GET /demo/config gives the page the broker's URL (no trailing slash), shop and version."""
    config = httpx2.get(demo.url + "/demo/config").json()
    assert config == {"brokerUrl": demo.broker, "shop": SHOP, "version": "v2023061"}


def test_login_mints_a_token_without_revealing_the_issuer_key(demo: Demo) -> None:
    """POST /demo/login answers the broker's token and expiry, and never the issuer key."""
    answer = httpx2.post(demo.url + "/demo/login", json={"customer_id": "alice"})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"token", "expires_at", "expires_in"}
    assert body["token"].count(".") == 2
    assert ISSUER_KEY not in answer.text
    assert answer.headers["cache-control"] == "no-store"
    history = httpx2.post(
        f"{demo.broker}/api/v2023061/{SHOP}/CustomerReferrals2",
        json={},
        headers={"Authorization": f"Bearer {body['token']}"},
    )
    assert history.status_code == 200


def test_login_refuses_a_missing_customer(demo: Demo) -> None:
    """A login without customer_id is 400 invalid_input naming the field."""
    answer = httpx2.post(demo.url + "/demo/login", json={"email": "a@example.com"})
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert (answer.json()["id"], answer.json()["field"]) == ("invalid_input", "customer_id")
    assert httpx2.post(demo.url + "/demo/login", content=b"[1]").json()["id"] == "invalid_json"


def test_login_relays_the_brokers_refusal(demo: Demo) -> None:
    """A customer id the broker refuses comes back with the broker's status and error id."""
    answer = httpx2.post(demo.url + "/demo/login", json={"customer_id": "a/b"})
    assert answer.status_code == 400
    assert answer.json()["id"] == "invalid_input"
    assert answer.headers["x-request-id"] == answer.json()["request_id"]


def test_fault_relay_sets_and_clears_sandbox_faults(demo: Demo) -> None:
    """POST /demo/fault reaches the sandbox's control API; DELETE clears; unknown keys refused."""
    refused = httpx2.post(demo.url + "/demo/fault", json={"url": "http://elsewhere"})
    assert (refused.status_code, refused.json()["field"]) == (400, "url")
    added = httpx2.post(demo.url + "/demo/fault", json={"status": 500, "times": 1})
    assert added.status_code == 200
    assert len(httpx2.get(demo.sandbox + "/_sandbox/faults").json()["faults"]) == 1
    assert httpx2.delete(demo.url + "/demo/fault").status_code == 200
    assert httpx2.get(demo.sandbox + "/_sandbox/faults").json()["faults"] == []


def test_calls_relay_counts_sandbox_calls(demo: Demo) -> None:
    """GET /demo/calls shows the sandbox's per-function call counts."""
    assert isinstance(httpx2.get(demo.url + "/demo/calls").json(), dict)


def test_widget_page_is_three_lines_with_the_versioned_widget(demo: Demo) -> None:
    """GET /widget is the widget alone: its versioned URL, SRI hash, crossorigin and element."""
    page = httpx2.get(demo.url + "/widget")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    manifest = httpx2.get(demo.broker + "/static/manifest.json").json()
    entry = manifest["files"]["referral-widget.js"]
    assert f'src="{demo.broker}{entry["path"]}"' in page.text
    assert f'integrity="{entry["integrity"]}"' in page.text
    assert 'crossorigin="anonymous"' in page.text
    assert f'<referral-widget broker="{demo.broker}" shop="{SHOP}"' in page.text
    assert 'token-url="/demo/token"' in page.text
    assert len(page.text.strip().splitlines()) == 3
    assert ISSUER_KEY not in page.text


def test_widget_token_route_mints_a_working_token(demo: Demo) -> None:
    """GET /demo/token answers {token, expires_at} for the demo's widget customer, uncached."""
    answer = httpx2.get(demo.url + "/demo/token")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert set(body) == {"token", "expires_at"}
    history = httpx2.post(
        f"{demo.broker}/api/v2023061/{SHOP}/CustomerReferrals2",
        json={},
        headers={"Authorization": f"Bearer {body['token']}"},
    )
    assert history.status_code == 200
    assert history.json()["referrals"]  # demo-* customers have a seeded history


def demo_token(demo: Demo, customer_id: str) -> str:
    """A customer token as the page holds it, from the demo's login."""
    answer = httpx2.post(demo.url + "/demo/login", json={"customer_id": customer_id})
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


def history(demo: Demo, token: str) -> dict[str, str]:
    """The customer's referrals through the broker, as {referral_bhid: status}."""
    answer = httpx2.post(
        f"{demo.broker}/api/v2023061/{SHOP}/CustomerReferrals2",
        json={},
        headers={"Authorization": f"Bearer {token}"},
    )
    answer.raise_for_status()
    return {row["referral_bhid"]: row["status"] for row in answer.json()["referrals"]}


def test_referral_relay_moves_a_referral_and_the_broker_shows_it_at_once(demo: Demo) -> None:
    """POST /demo/referrals/{id} changes the status and drops the broker's cached history."""
    token = demo_token(demo, "demo-life")
    before = history(demo, token)  # now cached by the broker
    bhid = next(bhid for bhid, status in before.items() if status == "invited")
    for status in ("qualified", "approved"):
        answer = httpx2.post(
            f"{demo.url}/demo/referrals/{bhid}",
            json={"status": status},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200
        assert answer.json() == {"referral_bhid": bhid, "status": status}
        assert ISSUER_KEY not in answer.text
        assert history(demo, token)[bhid] == status


def test_referral_relay_refuses_another_customers_referral(demo: Demo) -> None:
    """A referral id from someone else's history is 404 unknown_referral; nothing changes."""
    bobs = history(demo, demo_token(demo, "bob"))
    bhid = next(iter(bobs))
    answer = httpx2.post(
        f"{demo.url}/demo/referrals/{bhid}",
        json={"status": "rejected"},
        headers={"Authorization": f"Bearer {demo_token(demo, 'alice')}"},
    )
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["id"] == "unknown_referral"
    assert "signed-in customer" in answer.json()["message"]
    assert history(demo, demo_token(demo, "bob"))[bhid] == bobs[bhid]


def test_referral_relay_refuses_an_unknown_status_and_a_missing_token(demo: Demo) -> None:
    """An unknown status is 400 invalid_input naming status; no token is 401 missing_token."""
    token = demo_token(demo, "alice")
    bhid = next(iter(history(demo, token)))
    url = f"{demo.url}/demo/referrals/{bhid}"
    auth = {"Authorization": f"Bearer {token}"}
    wrong = httpx2.post(url, json={"status": "paid"}, headers=auth)
    assert wrong.status_code == 400
    assert (wrong.json()["id"], wrong.json()["field"]) == ("invalid_input", "status")
    assert "qualified, approved, rejected" in wrong.json()["message"]
    assert httpx2.post(url, content=b"[1]", headers=auth).json()["id"] == "invalid_json"
    anonymous = httpx2.post(url, json={"status": "approved"})
    assert (anonymous.status_code, anonymous.json()["id"]) == (401, "missing_token")
    spoiled = httpx2.post(url, json={"status": "approved"}, headers={"Authorization": "Bearer x"})
    assert (spoiled.status_code, spoiled.json()["id"]) == (401, "invalid_token")
