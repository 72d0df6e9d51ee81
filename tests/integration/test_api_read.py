"""CustomerReferrals2 over HTTP: routing, identity binding, input rules, cache headers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.stack import READ_PATH, VERSION, Broker, Sandbox
from tests.support import SHOP


def test_reads_the_customers_history_unchanged(broker: Broker, sandbox: Sandbox) -> None:
    """The sandbox's body comes back unchanged, with the spec's headers."""
    response = broker.read("alice")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "private, no-store"
    assert "Authorization" in response.headers["vary"] and "Origin" in response.headers["vary"]
    assert response.headers["cache-status"].startswith("broker; fwd=miss")
    body = response.json()
    assert body["referrals"] and {"summary", "referrals"} <= set(body)
    assert "ratelimit" in response.headers and "ratelimit-policy" in response.headers
    assert len(response.headers["x-request-id"]) >= 16


def test_second_read_is_a_cache_hit_with_identical_bytes(broker: Broker, sandbox: Sandbox) -> None:
    """The second read is served from the cache, byte for byte, without calling Bubblehouse."""
    first = broker.read("alice")
    second = broker.read("alice")
    assert second.headers["cache-status"].startswith("broker; hit")
    assert "ttl=" in second.headers["cache-status"]
    assert second.content == first.content
    assert sandbox.calls()["CustomerReferrals2"] == 1


def test_get_and_post_share_one_cache_entry(broker: Broker, sandbox: Sandbox) -> None:
    """GET with deanonymize=false and POST {} hit the same entry."""
    broker.read("alice")
    response = broker.client.get(f"{READ_PATH}?deanonymize=false", headers=broker.auth("alice"))
    assert response.status_code == 200
    assert response.headers["cache-status"].startswith("broker; hit")
    assert broker.client.get(READ_PATH, headers=broker.auth("alice")).status_code == 200


def test_customers_never_see_each_others_history(broker: Broker, sandbox: Sandbox) -> None:
    """Alice's and Bob's histories stay apart, cached or not."""
    alice = broker.read("alice").json()
    bob = broker.read("bob").json()
    assert alice != bob
    assert broker.read("alice").json() == alice and broker.read("bob").json() == bob


def test_upstream_gets_a_fresh_token_and_no_customer(broker: Broker, sandbox: Sandbox) -> None:
    """Bubblehouse receives the broker's own token for the same customer and no customer field."""
    token = broker.token("alice", "alice@example.com")
    response = broker.client.post(
        READ_PATH,
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "trace-me-1"},
        json={"customer": {"shopid": "alice", "email": "ALICE@example.com"}},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-me-1"
    seen = sandbox.requests()[-1]
    assert seen["headers"]["x-request-id"] == "trace-me-1"
    claims = seen["jwt"]["claims"]
    assert claims["sub"] == f"{SHOP}/alice" and claims["ce"] == "alice@example.com"
    assert claims["exp"] - claims["iat"] <= 60
    assert seen["jwt"]["header"]["kid"] == "key-a"
    assert seen["body"] == {}


@pytest.mark.parametrize(
    ("customer", "email"),
    [
        ({"shopid": "bob"}, None),
        ({"shopid": "ALICE"}, None),
        ({"email": "bob@example.com"}, "alice@example.com"),
        ({"email": "alice@example.com"}, None),
        ({"bhid": "0000018abc123def"}, "alice@example.com"),
        ({"shopid": "alice", "bhid": "0000018abc123def"}, None),
        ({"shopid": "alice", "email": "mallory@example.com"}, "alice@example.com"),
    ],
)
def test_identity_mismatch_is_refused_before_upstream(
    broker: Broker, sandbox: Sandbox, customer: dict[str, str], email: str | None
) -> None:
    """A customer field that does not match (or cannot be checked) is 403; Bubblehouse uncalled."""
    response = broker.client.post(
        READ_PATH, headers=broker.auth("alice", email), json={"customer": customer}
    )
    assert response.status_code == 403
    assert response.json()["id"] == "customer_identity_does_not_match_token"
    assert sandbox.total_calls() == 0


def test_empty_identity_fields_are_ignored(broker: Broker) -> None:
    """A customer object whose fields are all empty names nobody and is dropped."""
    for customer in ({}, {"shopid": "", "email": None, "bhid": ""}, None):
        response = broker.client.post(
            READ_PATH, headers=broker.auth("alice"), json={"customer": customer}
        )
        assert response.status_code == 200


def test_deanonymize_rules(broker: Broker, sandbox: Sandbox) -> None:
    """deanonymize=true is 403 for customer tokens; a non-boolean is 400 naming the field."""
    response = broker.client.post(READ_PATH, headers=broker.auth(), json={"deanonymize": True})
    assert response.status_code == 403 and response.json()["id"] == "deanonymize_not_allowed"
    response = broker.client.get(f"{READ_PATH}?deanonymize=true", headers=broker.auth())
    assert response.status_code == 403
    not_booleans: list[object] = ["yes", 1, "true", []]
    for value in not_booleans:
        response = broker.client.post(READ_PATH, headers=broker.auth(), json={"deanonymize": value})
        assert response.status_code == 400 and response.json()["field"] == "deanonymize"
    response = broker.client.get(f"{READ_PATH}?deanonymize=maybe", headers=broker.auth())
    assert response.json()["field"] == "deanonymize"
    assert (
        broker.client.post(
            READ_PATH, headers=broker.auth(), json={"deanonymize": False}
        ).status_code
        == 200
    )
    assert sandbox.calls()["CustomerReferrals2"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"extra": 1}, "extra"),
        ({"customer": "alice"}, "customer"),
        ({"customer": ["alice"]}, "customer"),
        ({"customer": {"shopid": 5}}, "customer.shopid"),
        ({"customer": {"phone": "123"}}, "customer.phone"),
    ],
)
def test_bad_input_names_the_field(broker: Broker, sandbox: Sandbox, body: Any, field: str) -> None:
    """Unknown or mistyped fields are 400 invalid_input with the field named."""
    response = broker.client.post(READ_PATH, headers=broker.auth(), json=body)
    assert response.status_code == 400
    assert response.json()["id"] == "invalid_input" and response.json()["field"] == field
    assert sandbox.total_calls() == 0


def test_get_accepts_only_deanonymize(broker: Broker) -> None:
    """GET query parameters other than deanonymize, customer included, are invalid_input."""
    for query, field in (
        ("customer=alice", "customer"),
        ("foo=1", "foo"),
        ("deanonymize=false&deanonymize=false", "deanonymize"),
    ):
        response = broker.client.get(f"{READ_PATH}?{query}", headers=broker.auth())
        assert response.status_code == 400 and response.json()["field"] == field


@pytest.mark.parametrize(
    ("content", "content_type", "status", "error_id"),
    [
        (b"{", "application/json", 400, "invalid_json"),
        (b"[]", "application/json", 400, "invalid_json"),
        (b"null", "application/json", 400, "invalid_json"),
        (b'"text"', "application/json", 400, "invalid_json"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (b"[" * 5000, "application/json", 400, "invalid_json"),
        (b"deanonymize=false", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"{}", "text/plain", 415, "unsupported_media_type"),
        (b'{"a": "' + b"x" * 17000 + b'"}', "application/json", 413, "payload_too_large"),
    ],
)
def test_body_rules(
    broker: Broker, content: bytes, content_type: str, status: int, error_id: str
) -> None:
    """Bodies that are not JSON objects, not JSON, or too large get their documented errors."""
    response = broker.client.post(
        READ_PATH, headers={**broker.auth(), "Content-Type": content_type}, content=content
    )
    assert response.status_code == status
    assert response.json()["id"] == error_id


def test_empty_post_body_needs_no_content_type(broker: Broker) -> None:
    """An empty POST, with or without a content type, reads the history."""
    assert broker.client.post(READ_PATH, headers=broker.auth()).status_code == 200
    response = broker.client.post(
        READ_PATH, headers={**broker.auth(), "Content-Type": "application/json"}, content=b""
    )
    assert response.status_code == 200


def test_json_with_charset_is_accepted(broker: Broker) -> None:
    """application/json; charset=utf-8 is JSON."""
    response = broker.client.post(
        READ_PATH,
        headers={**broker.auth(), "Content-Type": "application/json; charset=utf-8"},
        content=orjson.dumps({}),
    )
    assert response.status_code == 200


def test_routing(broker: Broker, sandbox: Sandbox) -> None:
    """Unknown versions are 400; other shops, functions and paths are 404; no open proxy."""
    auth = broker.auth()
    assert (
        broker.client.post(f"/api/v1999/{SHOP}/CustomerReferrals2", headers=auth).json()["id"]
        == "invalid_global_api_version"
    )
    for path in (
        f"/api/{VERSION}/other-shop/CustomerReferrals2",
        f"/api/{VERSION}/{SHOP}/Status2",
        f"/api/{VERSION}/{SHOP}/Refer1",
        f"/api/{VERSION}/{SHOP}/CustomerReferrals2/extra",
        f"/api/{VERSION}/{SHOP}/UpdateOrders4",
        "/api",
        "/nothing-here",
        f"/api/{VERSION}/{SHOP}/CustomerReferrals2/",
        "/tokens/",
        "/healthz/",
    ):
        response = broker.client.post(path, headers=auth)
        assert response.status_code == 404, path
        assert response.json()["id"] == "not_found"
        assert response.headers["content-type"] == "application/problem+json"
    assert sandbox.total_calls() == 0


def test_methods(broker: Broker) -> None:
    """CustomerReferrals2 answers GET and POST; others are 405 with Allow."""
    for method in ("PUT", "DELETE", "PATCH"):
        response = broker.client.request(method, READ_PATH, headers=broker.auth())
        assert response.status_code == 405
        assert response.json()["id"] == "method_not_allowed"
        assert "POST" in response.headers["allow"]
