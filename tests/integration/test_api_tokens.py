"""POST /tokens over HTTP: issuer keys, input rules, brute-force limits."""

from __future__ import annotations

import re
from typing import Any

import jwt
import pytest

from tests.stack import Broker, running_broker
from tests.support import ISSUER_KEY, ISSUER_KEY_OLD, SHOP


def mint(broker: Broker, body: Any, key: str = ISSUER_KEY, headers: Any = None) -> Any:
    return broker.client.post(
        "/tokens", json=body, headers={"Authorization": f"Bearer {key}", **(headers or {})}
    )


def test_mints_a_customer_token(broker: Broker) -> None:
    """A valid issuer key gets a Bubblehouse customer token with the spec's response fields."""
    response = mint(broker, {"customer_id": "alice", "email": "alice@example.com", "ttl": 120})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 120
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["expires_at"])
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == f"{SHOP}/alice" and claims["ce"] == "alice@example.com"
    assert claims["aud"] == "BH" and claims["exp"] - claims["iat"] == 120
    assert response.headers["cache-control"] == "no-store"
    assert broker.read(headers={"Authorization": f"Bearer {body['token']}"}).status_code == 200


def test_default_and_clamped_ttl(broker: Broker) -> None:
    """Without ttl the configured default applies; a larger ttl is clamped to the maximum."""
    assert mint(broker, {"customer_id": "a"}).json()["expires_in"] == 900
    assert mint(broker, {"customer_id": "a", "ttl": 10**6}).json()["expires_in"] == 3600


def test_every_configured_issuer_key_works(broker: Broker) -> None:
    """Both issuer keys are accepted (rotation)."""
    assert mint(broker, {"customer_id": "a"}, key=ISSUER_KEY_OLD).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789abcdef"},
        {"Authorization": f"Basic {ISSUER_KEY}"},
        {"Authorization": f"Bearer {ISSUER_KEY}x"},
        {"Authorization": f"Bearer {ISSUER_KEY[:-1]}"},
    ],
)
def test_bad_issuer_key_is_refused(broker: Broker, headers: dict[str, str]) -> None:
    """Missing, wrong or near-miss issuer keys get 401 invalid_issuer_key."""
    response = broker.client.post("/tokens", json={"customer_id": "a"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["id"] == "invalid_issuer_key"


def test_customer_token_is_not_an_issuer_key(broker: Broker) -> None:
    """A customer token cannot mint tokens."""
    response = mint(broker, {"customer_id": "a"}, key=broker.token())
    assert response.json()["id"] == "invalid_issuer_key"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "customer_id"),
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": 42}, "customer_id"),
        ({"customer_id": "a/b"}, "customer_id"),
        ({"customer_id": "x" * 129}, "customer_id"),
        ({"customer_id": "bad\nid"}, "customer_id"),
        ({"customer_id": "a", "email": "not-an-email"}, "email"),
        ({"customer_id": "a", "email": 5}, "email"),
        ({"customer_id": "a", "ttl": 0}, "ttl"),
        ({"customer_id": "a", "ttl": -5}, "ttl"),
        ({"customer_id": "a", "ttl": "60"}, "ttl"),
        ({"customer_id": "a", "ttl": True}, "ttl"),
        ({"customer_id": "a", "ttl": 1.5}, "ttl"),
        ({"customer_id": "a", "admin": True}, "admin"),
    ],
)
def test_bad_token_requests_name_the_field(broker: Broker, body: Any, field: str) -> None:
    """Each invalid POST /tokens body gets 400 invalid_input naming the field."""
    response = mint(broker, body)
    assert response.status_code == 400
    assert response.json()["id"] == "invalid_input"
    assert response.json()["field"] == field


def test_token_request_body_rules(broker: Broker) -> None:
    """Non-JSON, non-object, non-JSON content type and oversized bodies get their ids."""
    headers = broker.issuer()
    post = broker.client.post
    assert (
        post(
            "/tokens", content=b"{", headers={**headers, "Content-Type": "application/json"}
        ).json()["id"]
        == "invalid_json"
    )
    assert post("/tokens", json=["a"], headers=headers).json()["id"] == "invalid_json"
    assert (
        post(
            "/tokens",
            content=b"customer_id=a",
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        ).status_code
        == 415
    )
    big = b'{"customer_id": "' + b"a" * 17000 + b'"}'
    response = post("/tokens", content=big, headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["id"] == "payload_too_large"


def test_tokens_only_answers_post(broker: Broker) -> None:
    """GET /tokens is 405 method_not_allowed with an Allow header."""
    response = broker.client.get("/tokens")
    assert response.status_code == 405
    assert response.json()["id"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]


def test_tokens_never_answers_a_browser_preflight(broker: Broker) -> None:
    """A preflight from an allowed origin gets no CORS headers and no 2xx."""
    response = broker.client.options(
        "/tokens",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code >= 400
    assert "access-control-allow-origin" not in response.headers
    posted = mint(broker, {"customer_id": "a"}, headers={"Origin": "https://shop.example"})
    assert "access-control-allow-origin" not in posted.headers


def test_failed_issuer_keys_are_rate_limited_per_client(sandbox: Any) -> None:
    """Repeated wrong keys from one address are refused with 429 well before 100 attempts."""
    with running_broker(sandbox.url, BROKER_RATE_LIMIT_ISSUER="10/60s") as broker:
        statuses = []
        for _ in range(15):
            response = mint(broker, {"customer_id": "a"}, key="wrong-key-0123456789abcdef")
            statuses.append(response.status_code)
        assert statuses[:10] == [401] * 10
        assert statuses[10:] == [429] * 5
        assert response.json()["id"] == "rate_limit_exceeded"
        assert int(response.headers["retry-after"]) >= 1


def test_valid_issuer_key_is_served_after_failures_from_the_same_address(sandbox: Any) -> None:
    """After 10+ wrong keys from one address, the right key from that address still gets 200."""
    with running_broker(sandbox.url, BROKER_RATE_LIMIT_ISSUER="10/60s") as broker:
        for _ in range(12):
            mint(broker, {"customer_id": "a"}, key="wrong-key-0123456789abcdef")
        assert (
            mint(broker, {"customer_id": "a"}, key="wrong-key-0123456789abcdef").status_code == 429
        )
        assert mint(broker, {"customer_id": "a"}).status_code == 200
        assert mint(broker, {"customer_id": "a"}, key=ISSUER_KEY_OLD).status_code == 200


def test_successful_mints_do_not_count_as_failures(broker: Broker) -> None:
    """Many valid mints in a row are never rate limited by the failure limit."""
    assert all(mint(broker, {"customer_id": f"c{i}"}).status_code == 200 for i in range(30))
