"""The upstream client: every Bubblehouse answer and transport failure becomes the right error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import orjson
import pytest

from broker.errors import (
    BrokerError,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from broker.upstream import AiohttpTransport, CallInfo, CircuitBreaker, Upstream
from tests.conftest import make_settings
from tests.servers import free_port

Handler = Callable[[httpx2.Request], httpx2.Response]


def upstream_with(handler: Handler, **settings: str) -> Upstream:
    return Upstream.create(
        make_settings(BROKER_UPSTREAM_URL="http://bubblehouse.test", **settings),
        httpx2.MockTransport(handler),
    )


async def call(upstream: Upstream, retry_connect: bool = True) -> bytes:
    try:
        return await upstream.call(
            "v2023061",
            "CustomerReferrals2",
            {},
            "upstream-token",
            request_id="req-1",
            traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
            retry_connect=retry_connect,
            info=CallInfo(),
        )
    finally:
        await upstream.aclose()


async def test_success_body_passes_through_byte_for_byte() -> None:
    """A 200 JSON object comes back as the exact bytes Bubblehouse sent, order and all."""
    body = b'{"zeta": 1, "referrals": [{"b": 2, "a": 1}], "new_field": {"x": null}}'
    assert await call(upstream_with(lambda r: httpx2.Response(200, content=body))) == body


async def test_request_is_post_json_with_bearer_and_ids() -> None:
    """Upstream gets POST + JSON, the fresh bearer token, the request id and the traceparent."""
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"referrals": []})

    await call(upstream_with(handler))
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == "http://bubblehouse.test/api/v2023061/test-shop/CustomerReferrals2"
    assert request.headers["authorization"] == "Bearer upstream-token"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-request-id"] == "req-1"
    assert request.headers["traceparent"].startswith("00-" + "a" * 32)
    assert orjson.loads(request.content) == {}


@pytest.mark.parametrize(
    ("status", "body", "error", "error_id"),
    [
        (
            401,
            {"id": "invalid_token", "message": "The token has expired"},
            UpstreamMisconfigured,
            "upstream_misconfigured",
        ),
        (
            400,
            {"id": "invalid_global_api_version"},
            UpstreamMisconfigured,
            "upstream_misconfigured",
        ),
        (
            400,
            {"id": "obsolete_global_api_version"},
            UpstreamMisconfigured,
            "upstream_misconfigured",
        ),
        (
            400,
            {"id": "inaccessible_global_api_version"},
            UpstreamMisconfigured,
            "upstream_misconfigured",
        ),
        (
            429,
            {"id": "rate_limit_exceeded", "message": "over"},
            UpstreamRateLimited,
            "rate_limit_exceeded",
        ),
        (400, {"id": "missing_customer_identity"}, UpstreamRejected, "missing_customer_identity"),
        (404, {"id": "empty_customer_identity"}, UpstreamRejected, "empty_customer_identity"),
        (
            404,
            {"id": "no_customers_match_customer_identity"},
            UpstreamRejected,
            "no_customers_match_customer_identity",
        ),
        (
            404,
            {"id": "customer_identity_partially_mismatches_matched_customer"},
            UpstreamRejected,
            "customer_identity_partially_mismatches_matched_customer",
        ),
        (
            403,
            {"id": "customer_identity_does_not_match_token"},
            UpstreamRejected,
            "customer_identity_does_not_match_token",
        ),
        (422, {"id": "some_future_error"}, UpstreamRejected, "some_future_error"),
        (400, {"id": "Not A Slug!"}, UpstreamError, "upstream_error"),
        (400, {"message": "no id"}, UpstreamError, "upstream_error"),
        (400, ["id"], UpstreamError, "upstream_error"),
        (500, {"id": "internal"}, UpstreamError, "upstream_error"),
        (503, {"id": "maintenance"}, UpstreamError, "upstream_error"),
        (302, {"id": "moved"}, UpstreamError, "upstream_error"),
    ],
)
async def test_upstream_answers_map_to_broker_errors(
    status: int, body: object, error: type[BrokerError], error_id: str
) -> None:
    """Each kind of Bubblehouse answer becomes its documented broker error."""
    with pytest.raises(error) as caught:
        await call(upstream_with(lambda r: httpx2.Response(status, json=body)))
    assert caught.value.error_id == error_id
    if isinstance(caught.value, UpstreamRejected):
        assert caught.value.status_code == status
        assert "upstream_status" in caught.value.extra


@pytest.mark.parametrize(
    "content",
    [b"<html>502 Bad Gateway</html>", b"", b"[1, 2]", b'"text"', b"{not json", b"null"],
)
async def test_non_json_success_is_an_upstream_error(content: bytes) -> None:
    """A 200 that is not a JSON object is not passed on."""
    with pytest.raises(UpstreamError):
        await call(upstream_with(lambda r: httpx2.Response(200, content=content)))


async def test_html_error_page_is_an_upstream_error_without_its_text() -> None:
    """An HTML 502 becomes upstream_error and its text appears nowhere in the error."""
    page = b"<html><body>secret proxy page at 10.1.2.3</body></html>"
    with pytest.raises(UpstreamError) as caught:
        await call(upstream_with(lambda r: httpx2.Response(502, content=page)))
    assert "10.1.2.3" not in caught.value.message and not caught.value.extra.get("detail")


async def test_retry_after_of_bubblehouse_429_is_kept() -> None:
    """Bubblehouse's Retry-After, when it sends one, is passed on."""
    response = httpx2.Response(
        429, json={"id": "rate_limit_exceeded"}, headers={"Retry-After": "7"}
    )
    with pytest.raises(UpstreamRateLimited) as caught:
        await call(upstream_with(lambda r: response))
    assert caught.value.retry_after == 7 and caught.value.headers()["Retry-After"] == "7"


async def test_timeout_becomes_upstream_timeout() -> None:
    """A read timeout is upstream_timeout (504)."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("slow", request=request)

    with pytest.raises(UpstreamTimeout):
        await call(upstream_with(handler))


async def test_refused_connection_is_retried_once_then_unavailable() -> None:
    """A refused connection is tried twice (it never reached Bubblehouse), then 503."""
    attempts: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        raise httpx2.ConnectError("refused", request=request)

    with pytest.raises(UpstreamUnavailable):
        await call(upstream_with(handler))
    assert len(attempts) == 2


async def test_refused_connection_then_success_succeeds() -> None:
    """A single refused connection followed by an answer is invisible to the caller."""
    attempts: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx2.ConnectError("refused", request=request)
        return httpx2.Response(200, json={"referrals": []})

    assert orjson.loads(await call(upstream_with(handler))) == {"referrals": []}


async def test_no_retry_when_disallowed_and_broken_connection_is_not_retried() -> None:
    """Without retry_connect one attempt is made; a connection broken mid-answer is not retried."""
    attempts: list[str] = []

    def refused(request: httpx2.Request) -> httpx2.Response:
        attempts.append("connect")
        raise httpx2.ConnectError("refused", request=request)

    with pytest.raises(UpstreamUnavailable):
        await call(upstream_with(refused), retry_connect=False)

    def broken(request: httpx2.Request) -> httpx2.Response:
        attempts.append("read")
        raise httpx2.RemoteProtocolError("peer closed", request=request)

    with pytest.raises(UpstreamError):
        await call(upstream_with(broken))
    assert attempts == ["connect", "read"]


async def send(upstream: Upstream, info: CallInfo | None = None) -> bytes:
    """One Refer2 call, never retried, as the broker makes it."""
    return await upstream.call(
        "v2023061",
        "Refer2",
        {},
        "t",
        request_id="r",
        traceparent=None,
        retry_connect=False,
        info=info or CallInfo(),
    )


async def test_circuit_opens_after_failures_and_skips_upstream() -> None:
    """After five failures in a row the circuit opens and calls fail fast without upstream."""
    hits: list[int] = []

    def failing(request: httpx2.Request) -> httpx2.Response:
        hits.append(1)
        return httpx2.Response(500, json={"id": "boom"})

    upstream = upstream_with(failing)
    try:
        for _ in range(5):
            with pytest.raises(UpstreamError):
                await send(upstream)
        info = CallInfo()
        with pytest.raises(UpstreamUnavailable):
            await send(upstream, info)
        assert len(hits) == 5 and info.outcome == "circuit_open"
    finally:
        await upstream.aclose()


def test_circuit_half_opens_after_cooldown_and_closes_on_success() -> None:
    """After the cool-down one trial goes through; its success closes the circuit."""
    breaker = CircuitBreaker(threshold=2, cooldown=0.0)
    breaker.failure()
    breaker.failure()
    assert breaker.state == "half_open"
    assert breaker.allow() is True
    assert breaker.allow() is False  # only one trial at a time
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


async def test_client_errors_do_not_open_the_circuit() -> None:
    """Bubblehouse's 4xx answers show it is alive: they never open the circuit."""
    upstream = upstream_with(lambda r: httpx2.Response(404, json={"id": "empty_customer_identity"}))
    try:
        for _ in range(8):
            with pytest.raises(UpstreamRejected):
                await send(upstream)
        assert upstream.breaker.state == "closed"
    finally:
        await upstream.aclose()


async def test_aiohttp_transport_speaks_httpx2(sandbox_server: Any) -> None:
    """The production transport serves a plain httpx2 client, mapping refusals and timeouts."""
    transport = AiohttpTransport()
    async with httpx2.AsyncClient(transport=transport, timeout=5) as client:
        response = await client.get(f"{sandbox_server.url}/_sandbox/calls")
        assert response.status_code == 200
        assert "CustomerReferrals2" in response.json()
        with pytest.raises(httpx2.ConnectError):
            await client.get(f"http://127.0.0.1:{free_port()}/")
        await client.post(f"{sandbox_server.url}/_sandbox/faults", json={"delay": 2, "times": 1})
        with pytest.raises(httpx2.ReadTimeout):
            await client.post(
                f"{sandbox_server.url}/api/v2023061/test-shop/Status2", json={}, timeout=0.3
            )
        await client.delete(f"{sandbox_server.url}/_sandbox/faults")
