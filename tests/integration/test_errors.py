"""The error contract: every id of the catalogue, produced over real HTTP, has one shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from broker.errors import CATALOGUE, ERROR_TYPE_BASE, InvalidToken, problem_body
from tests.stack import READ_PATH, WRITE_PATH, Broker, Sandbox
from tests.support import SHOP

Recipe = Callable[[Broker, Sandbox], httpx2.Response]


def expired(broker: Broker, sandbox: Sandbox) -> httpx2.Response:
    import time

    import jwt

    from tests.unit.test_tokens import KEY_A

    now = int(time.time())
    token = jwt.encode(
        {"aud": "BH", "sub": f"{SHOP}/alice", "iat": now - 900, "exp": now - 300},
        KEY_A,
        algorithm="HS256",
        headers={"kid": "key-a"},
    )
    return broker.client.post(READ_PATH, headers={"Authorization": f"Bearer {token}"})


def limited(broker: Broker, sandbox: Sandbox) -> httpx2.Response:
    for _ in range(30):
        response = broker.client.post(
            "/tokens", headers={"Authorization": "Bearer nope-nope-nope-nope"}
        )
        if response.status_code == 429:
            return response
    raise AssertionError("never rate limited")


def broken_handler(broker: Broker, sandbox: Sandbox) -> httpx2.Response:
    """A bug in a handler (the upstream seam turns its own surprises into upstream_error)."""
    from starlette.routing import Route

    from broker.telemetry.request import RequestInfo
    from broker.web.app import Services, create_app, endpoint
    from tests.servers import serve_app

    async def bug(request: Any, svc: Services, info: RequestInfo) -> Any:
        raise RuntimeError("secret internal detail")

    app = create_app(broker.settings)
    app.router.routes.append(Route("/bug", endpoint("/bug", bug), methods=["GET"]))
    with serve_app(app) as server, httpx2.Client(base_url=server.url) as client:
        return client.get("/bug")


def with_fault(fault: dict[str, object]) -> Recipe:
    def recipe(broker: Broker, sandbox: Sandbox) -> httpx2.Response:
        sandbox.fault(**fault)
        return broker.read()

    return recipe


def reused_key(broker: Broker, sandbox: Sandbox) -> httpx2.Response:
    broker.refer({"channel": "sms"}, headers={"Idempotency-Key": "k"})
    return broker.refer(
        {"channel": "email", "destination": "a@example.com"}, headers={"Idempotency-Key": "k"}
    )


def unreachable(broker: Broker, sandbox: Sandbox) -> httpx2.Response:
    from tests.servers import free_port
    from tests.stack import running_broker

    with running_broker(f"http://127.0.0.1:{free_port()}") as other:
        return other.read()


def platform_token_refused(broker: Broker, sandbox: Sandbox) -> httpx2.Response:
    """A store JWT that is no JWT, posted by a storefront of the shop (CORS expected)."""
    from tests.stack import bigcommerce_env, running_broker

    with running_broker(sandbox.url, **bigcommerce_env()) as other:
        origin = broker.client.headers["Origin"]
        return other.client.post(
            "/bigcommerce/token", json={"token": "not.a.jwt"}, headers={"Origin": origin}
        )


def slow(broker: Broker, sandbox: Sandbox) -> httpx2.Response:
    from tests.stack import running_broker

    with running_broker(sandbox.url, BROKER_UPSTREAM_TIMEOUT="0.2") as other:
        sandbox.fault(delay=1)
        return other.read()


RECIPES: dict[str, Recipe] = {
    "missing_token": lambda b, s: b.client.post(READ_PATH),
    "invalid_token": expired,
    "invalid_platform_token": platform_token_refused,
    "invalid_issuer_key": lambda b, s: b.client.post("/tokens", json={"customer_id": "a"}),
    "customer_identity_does_not_match_token": lambda b, s: b.client.post(
        READ_PATH, headers=b.auth(), json={"customer": {"shopid": "mallory"}}
    ),
    "deanonymize_not_allowed": lambda b, s: b.client.post(
        READ_PATH, headers=b.auth(), json={"deanonymize": True}
    ),
    "invalid_global_api_version": lambda b, s: b.client.post(
        f"/api/v1/{SHOP}/CustomerReferrals2", headers=b.auth()
    ),
    "invalid_input": lambda b, s: b.refer({"channel": "NOPE"}),
    "invalid_json": lambda b, s: b.client.post(
        READ_PATH, headers={**b.auth(), "Content-Type": "application/json"}, content=b"{x"
    ),
    "not_found": lambda b, s: b.client.get("/no/such/thing"),
    "method_not_allowed": lambda b, s: b.client.get(WRITE_PATH, headers=b.auth()),
    "idempotency_key_reused": reused_key,
    "payload_too_large": lambda b, s: b.client.post(
        WRITE_PATH,
        headers={**b.auth(), "Content-Type": "application/json"},
        content=b'{"channel": "' + b"x" * 20000 + b'"}',
    ),
    "unsupported_media_type": lambda b, s: b.client.post(
        WRITE_PATH, headers={**b.auth(), "Content-Type": "text/plain"}, content=b"channel=sms"
    ),
    "rate_limit_exceeded": limited,
    "upstream_misconfigured": with_fault({"reject_tokens": True}),
    "upstream_error": with_fault({"status": 500}),
    "upstream_unavailable": unreachable,
    "upstream_timeout": slow,
    "internal_error": broken_handler,
}


def test_every_catalogue_id_has_a_recipe() -> None:
    """The contract below covers every error class of the catalogue."""
    assert set(RECIPES) == {cls.id for cls in CATALOGUE}


@pytest.mark.parametrize("error_id", sorted(RECIPES))
def test_error_shape(broker: Broker, sandbox: Sandbox, error_id: str) -> None:
    """Each error is problem+json with the Bubblehouse and RFC 9457 members and no secrets."""
    origin = "https://shop.example"
    broker.client.headers["Origin"] = origin
    response = RECIPES[error_id](broker, sandbox)
    body = response.json()
    assert body["id"] == error_id, body
    assert response.headers["content-type"] == "application/problem+json"
    assert body["status"] == response.status_code
    assert body["type"] == ERROR_TYPE_BASE + error_id
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["retryable"], bool)
    assert body["request_id"] == response.headers["x-request-id"]
    allowed = {
        "type",
        "title",
        "status",
        "id",
        "message",
        "retryable",
        "request_id",
        "retry_after",
        "reason",
        "field",
        "upstream_status",
        "upstream_message",
    }
    assert set(body) <= allowed
    assert "Traceback" not in response.text and "eyJ" not in response.text
    assert "127.0.0.1" not in response.text
    if response.request.headers.get("origin") == origin:
        # Readable by the storefront, except /tokens, which no browser may call.
        expected = None if response.url.path == "/tokens" else origin
        assert response.headers.get("access-control-allow-origin") == expected


def test_invalid_token_reasons_are_closed() -> None:
    """invalid_token carries one of the documented reasons, and no other is possible."""
    body = problem_body(InvalidToken("expired"), "r")
    assert body["reason"] == "expired"
    with pytest.raises(ValueError, match="unknown"):
        InvalidToken("because")


def test_upstream_members_render() -> None:
    """upstream_message and upstream_status ride in the body; a back-off says when to retry."""
    from broker.errors import UpstreamBackoff, UpstreamRejected

    body = problem_body(UpstreamRejected("referral_program_disabled", 422, "Paused."), "r")
    assert body["upstream_message"] == "Paused." and body["upstream_status"] == 422
    assert body["message"] != "Paused." and body["status"] == 422
    assert "upstream_message" not in problem_body(UpstreamRejected("x_y", 400), "r")
    held = UpstreamBackoff(2.2)
    assert problem_body(held, "r")["retry_after"] == 3 and held.headers()["Retry-After"] == "3"
    assert problem_body(held, "r")["id"] == "upstream_error" and not held.reached_upstream
