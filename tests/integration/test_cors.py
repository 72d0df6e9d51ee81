"""CORS: storefront origins can read every answer, others get nothing, /tokens stays closed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.web.cors import CORSMiddleware, OriginPolicy
from tests.stack import READ_PATH, WRITE_PATH, Broker, Sandbox, running_broker
from tests.support import SHOP

ORIGIN = "https://shop.example"
EXPOSED = {
    "x-request-id",
    "retry-after",
    "cache-status",
    "consistency-token",
    "ratelimit",
    "ratelimit-policy",
}


def exposes_all(headers: Mapping[str, str]) -> bool:
    exposed = {h.strip().lower() for h in headers["access-control-expose-headers"].split(",")}
    return exposed >= EXPOSED


def test_preflight_from_allowed_origin(broker: Broker) -> None:
    """The broker answers the preflight of both calls, allowing the spec's request headers."""
    for path in (READ_PATH, WRITE_PATH):
        response = broker.client.options(
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == ORIGIN
        allowed = {
            h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
        }
        assert {
            "authorization",
            "content-type",
            "idempotency-key",
            "consistency-token",
            "x-request-id",
            "traceparent",
        } <= allowed
        assert "POST" in response.headers["access-control-allow-methods"]


def test_preflight_from_other_origin_gets_no_cors(broker: Broker) -> None:
    """A preflight from an unlisted origin carries no CORS headers."""
    response = broker.client.options(
        READ_PATH,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert not [h for h in response.headers if h.startswith("access-control-")]


@pytest.mark.parametrize("kind", ["200", "401", "403", "404", "405", "429", "502"])
def test_every_answer_to_an_allowed_origin_is_readable(sandbox: Sandbox, kind: str) -> None:
    """Successes and errors alike carry Access-Control-Allow-Origin and the exposed headers."""
    with running_broker(sandbox.url, BROKER_RATE_LIMIT_READ="1/60s") as broker:
        broker.client.headers["Origin"] = ORIGIN
        if kind == "200":
            response = broker.read()
        elif kind == "401":
            response = broker.client.post(READ_PATH)
        elif kind == "403":
            response = broker.client.post(
                READ_PATH, headers=broker.auth(), json={"customer": {"shopid": "bob"}}
            )
        elif kind == "404":
            response = broker.client.get(f"/api/v2023061/{SHOP}/Nope")
        elif kind == "405":
            response = broker.client.get(WRITE_PATH, headers=broker.auth())
        elif kind == "429":
            broker.read()
            response = broker.read()
        else:
            sandbox.fault(status=500)
            response = broker.read()
        assert response.status_code == int(kind), response.text
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert exposes_all(response.headers)
        assert "Origin" in response.headers["vary"]


def test_other_origins_get_no_cors_headers(broker: Broker) -> None:
    """A request from an unlisted origin is answered without any CORS header."""
    response = broker.client.post(
        READ_PATH, headers={**broker.auth(), "Origin": "https://evil.example"}
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_wildcard_origins() -> None:
    """*.shop.example matches sub-domains (same scheme and port), never the apex or look-alikes."""
    policy = OriginPolicy(("https://*.shop.example", "http://localhost:3000"))
    assert policy.allows("https://www.shop.example")
    assert policy.allows("https://eu.www.shop.example")
    assert policy.allows("http://localhost:3000")
    assert not policy.allows("https://shop.example")
    assert not policy.allows("http://www.shop.example")
    assert not policy.allows("https://www.shop.example:8443")
    assert not policy.allows("https://evilshop.example")
    assert not policy.allows("https://www.shop.example.evil.com")
    assert not policy.allows("https://x_y.shop.example")
    assert not policy.allows("null")
    assert not policy.allows("http://localhost:3001")


@pytest.mark.parametrize("path", ["/tokens", "/invalidations", "/shopify/token", "/metrics"])
@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS"])
def test_server_to_server_routes_never_carry_cors(broker: Broker, path: str, method: str) -> None:
    """/tokens, /invalidations, /shopify/token, /metrics: no Access-Control-* header, ever."""
    response = broker.client.request(
        method, path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


def test_a_path_with_a_trailing_newline_is_not_preflighted(broker: Broker) -> None:
    """The preflight path is a full match: '/Refer2\\n' gets no preflight answer."""
    response = broker.client.options(
        WRITE_PATH + "%0A", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-methods" not in response.headers


def test_preflights_allow_each_routes_own_methods(broker: Broker) -> None:
    """The preflight's Access-Control-Allow-Methods are the methods of the route asked about."""
    allowed = {}
    for path in (READ_PATH, WRITE_PATH):
        response = broker.client.options(
            path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        )
        allowed[path] = response.headers["access-control-allow-methods"]
    assert allowed == {READ_PATH: "GET, POST, OPTIONS", WRITE_PATH: "POST, OPTIONS"}


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind the middleware: answers 299, so a test sees when it was reached."""
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def call(app: ASGIApp, method: str, path: str) -> tuple[int, dict[str, str]]:
    """One request through a pure ASGI app, with an allowed origin asking for a preflight."""
    sent: list[Message] = []
    headers = [(b"origin", ORIGIN.encode()), (b"access-control-request-method", b"GET")]
    scope = {"type": "http", "method": method, "path": path, "headers": headers}

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    async def run() -> None:
        await app(scope, receive, send)

    asyncio.run(run())
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


def test_the_routes_given_decide_preflights_and_closed_paths() -> None:
    """Preflights and closed paths follow the Route objects handed over, not a copy of them."""
    browser = [Route("/things/{id}/look", inner, methods=["GET", "OPTIONS"], name="things")]
    server = [Route("/mint", inner, methods=["POST"], name="mint")]
    app = CORSMiddleware(inner, (ORIGIN,), browser=browser, server_only=server)
    status, headers = call(app, "OPTIONS", "/things/7/look")
    assert (status, headers["access-control-allow-methods"]) == (204, "GET, OPTIONS")
    assert headers["access-control-allow-origin"] == ORIGIN
    for path in ("/things/7/look/more", "/things/7/look\n", "/other"):
        status, headers = call(app, "OPTIONS", path)  # not a browser route: the app answers
        assert status == 299 and "access-control-allow-methods" not in headers, path
        assert headers["access-control-allow-origin"] == ORIGIN
    status, headers = call(app, "POST", "/mint")
    assert status == 299 and not [h for h in headers if h.startswith("access-control-")]
