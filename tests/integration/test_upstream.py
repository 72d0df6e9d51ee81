"""The upstream client: every Bubblehouse answer and transport failure becomes the right error."""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

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
from broker.rules.functions import BY_NAME
from broker.upstream.client import CallInfo, Upstream, clean_message
from broker.upstream.transport import (
    Answer,
    BodyTooLarge,
    ConnectFailed,
    ConnectionBroken,
    ConnectTimeout,
    FakeTransport,
    ReadTimeout,
    UndecodableBody,
)
from tests.rawhttp import RawUpstream, answer, full_backlog, gzipped, reset_after, stall
from tests.servers import free_port
from tests.support import make_settings

Handler = Callable[[str, bytes, Mapping[str, str]], Answer]


def reply(status: int, body: object = None, headers: dict[str, str] | None = None) -> Handler:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return lambda path, data, sent: Answer(status, headers or {}, content)


def raising(error: Exception) -> Handler:
    def handler(path: str, data: bytes, sent: Mapping[str, str]) -> Answer:
        raise error

    return handler


def upstream_with(handler: Handler, **settings: str) -> tuple[Upstream, FakeTransport]:
    fake = FakeTransport(handler)
    settings.setdefault("BROKER_UPSTREAM_URL", "http://bubblehouse.test")
    return Upstream.create(make_settings(**settings), fake), fake


async def call(
    upstream: Upstream,
    *,
    function: str = "CustomerReferrals2",
    customer: str = "",
    retry_connect: bool = True,
    info: CallInfo | None = None,
) -> bytes:
    return await upstream.call(
        "v2023061",
        function,
        {},
        "upstream-token",
        request_id="req-1",
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        retry_connect=retry_connect,
        info=info or CallInfo(),
        shop="test-shop",
        customer=customer,
        holds_back=BY_NAME[function].holds_back,
        refusal_text=BY_NAME[function].refusal_text,
    )


async def test_success_body_passes_through_byte_for_byte() -> None:
    """A 200 JSON object comes back as the exact bytes Bubblehouse sent, order and all."""
    body = b'{"zeta": 1, "referrals": [{"b": 2, "a": 1}], "new_field": {"x": null}}'
    upstream, _ = upstream_with(reply(200, body))
    info = CallInfo()
    assert await call(upstream, info=info) == body
    assert (info.status, info.outcome) == (200, "ok")


async def test_request_is_post_json_with_bearer_and_ids() -> None:
    """Upstream gets the function's path, JSON, the bearer token, request id and traceparent."""
    upstream, fake = upstream_with(reply(200, {"referrals": []}))
    await call(upstream)
    path, body, headers = fake.requests[0]
    assert path == "/api/v2023061/test-shop/CustomerReferrals2"
    assert headers["Authorization"] == "Bearer upstream-token"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Request-ID"] == "req-1"
    assert headers["traceparent"].startswith("00-" + "a" * 32)
    assert orjson.loads(body) == {}


@pytest.mark.parametrize(
    ("status", "body", "error", "error_id"),
    [
        (401, {"id": "invalid_token", "message": "expired"}, UpstreamMisconfigured, None),
        (401, {"id": "token_revoked"}, UpstreamMisconfigured, None),
        (401, {"id": "Not a slug"}, UpstreamMisconfigured, None),
        (401, b"<html>401</html>", UpstreamMisconfigured, None),
        (400, {"id": "invalid_global_api_version"}, UpstreamMisconfigured, None),
        (400, {"id": "obsolete_global_api_version"}, UpstreamMisconfigured, None),
        (400, {"id": "inaccessible_global_api_version"}, UpstreamMisconfigured, None),
        (429, {"id": "rate_limit_exceeded", "message": "over"}, UpstreamRateLimited, None),
        (429, b"slow down", UpstreamRateLimited, None),
        (400, {"id": "missing_customer_identity"}, UpstreamRejected, None),
        (404, {"id": "empty_customer_identity"}, UpstreamRejected, None),
        (404, {"id": "no_customers_match_customer_identity"}, UpstreamRejected, None),
        (
            404,
            {"id": "customer_identity_partially_mismatches_matched_customer"},
            UpstreamRejected,
            None,
        ),
        (403, {"id": "customer_identity_does_not_match_token"}, UpstreamRejected, None),
        (422, {"id": "some_future_error"}, UpstreamRejected, None),
        (400, {"id": "Not A Slug!"}, UpstreamError, None),
        (400, {"message": "no id"}, UpstreamError, None),
        (400, ["id"], UpstreamError, None),
        (500, {"id": "internal"}, UpstreamError, None),
        (503, {"id": "maintenance"}, UpstreamError, None),
        (302, {"id": "moved"}, UpstreamError, None),
        (400, {"id": "invalid_input", "message": "bad"}, UpstreamError, None),
        (500, {"id": "internal_error"}, UpstreamError, None),
        (404, {"id": "not_found"}, UpstreamError, None),
        (403, {"id": "missing_token"}, UpstreamError, None),
        (400, {"id": "idempotency_key_reused"}, UpstreamError, None),
        (404, {"id": "upstream_timeout"}, UpstreamError, None),
        (407, {"id": "proxy_authentication_required"}, UpstreamError, None),
        (408, {"id": "some_future_error"}, UpstreamError, None),
        (431, {"id": "some_future_error"}, UpstreamError, None),
        (401, {"id": "missing_token"}, UpstreamMisconfigured, None),
    ],
)
async def test_upstream_answers_map_to_broker_errors(
    status: int, body: object, error: type[BrokerError], error_id: str | None
) -> None:
    """Each kind of Bubblehouse answer becomes its documented broker error (any 401 included)."""
    upstream, _ = upstream_with(reply(status, body))
    with pytest.raises(error) as caught:
        await call(upstream)
    if isinstance(caught.value, UpstreamRejected):
        assert isinstance(body, dict)
        assert caught.value.id == body["id"]
        assert caught.value.status == status
        assert caught.value.extra["upstream_status"] == status
    if status == 401:
        assert caught.value.status == 502
        assert caught.value.id == "upstream_misconfigured"


@pytest.mark.parametrize(
    "content",
    [b"<html>502 Bad Gateway</html>", b"", b"[1, 2]", b'"text"', b"{not json", b"null"],
)
async def test_non_json_success_is_an_upstream_error(content: bytes) -> None:
    """A 200 that is not a JSON object is not passed on."""
    upstream, _ = upstream_with(reply(200, content))
    with pytest.raises(UpstreamError):
        await call(upstream)


async def test_bubblehouse_refer2_refusal_message_is_passed_on_cleaned() -> None:
    """A Refer2 4xx JSON refusal's message becomes upstream_message: Cc/Cf/Zl/Zp gone, 500 max."""
    text = (
        "Referrals are\x00 paused\n until\u2028 May.\u202e\u200b\ufeff\x1b[31m\u2029" + "x" * 1000
    )
    upstream, _ = upstream_with(reply(422, {"id": "referral_program_disabled", "message": text}))
    with pytest.raises(UpstreamRejected) as caught:
        await call(upstream, function="Refer2")
    passed = caught.value.extra["upstream_message"]
    assert passed.startswith("Referrals are paused until May.[31m")
    assert len(passed) == 500
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in passed)
    assert "May" not in caught.value.message  # the broker's own words stay the broker's


@pytest.mark.parametrize(
    ("function", "status", "body"),
    [
        ("CustomerReferrals2", 422, {"id": "referral_program_disabled", "message": "kid k1"}),
        ("Refer2", 401, {"id": "invalid_token", "message": "secret kid k1 not found"}),
        ("Refer2", 401, {"id": "token_revoked", "message": "secret kid k1 not found"}),
        ("Refer2", 429, {"id": "rate_limit_exceeded", "message": "kid k1 over quota"}),
        ("Refer2", 400, {"id": "invalid_global_api_version", "message": "kid k1"}),
        ("Refer2", 400, {"id": "invalid_input", "message": "kid k1"}),
        ("Refer2", 404, {"id": "not_found", "message": "kid k1"}),
        ("Refer2", 407, {"id": "proxy_authentication_required", "message": "kid k1"}),
    ],
)
async def test_upstream_message_only_from_a_refer2_refusal(
    function: str, status: int, body: object
) -> None:
    """No 401, 429, broker-defined id, odd status or read ever carries Bubblehouse's text."""
    upstream, _ = upstream_with(reply(status, body))
    with pytest.raises(BrokerError) as caught:
        await call(upstream, function=function)
    assert "upstream_message" not in caught.value.extra
    assert "k1" not in repr(caught.value.extra) and "k1" not in caught.value.message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"id": "internal_error", "message": "db shard 7 down"}),
        (502, b"db shard 7 down"),
        (400, b"db shard 7 down"),
        (400, {"message": "db shard 7 down"}),
    ],
)
async def test_no_upstream_text_from_5xx_or_non_json(status: int, body: object) -> None:
    """Nothing of a 5xx, a non-JSON answer or a body without an error id reaches an error."""
    upstream, _ = upstream_with(reply(status, body))
    with pytest.raises(BrokerError) as caught:
        await call(upstream)
    assert "shard" not in repr(caught.value.extra) and "shard" not in caught.value.message


def test_clean_message() -> None:
    """Only strings survive; controls, format and separator characters go; blank is None."""
    assert clean_message("ok\u0085 \u200bfine\x7f") == "ok fine"
    assert clean_message("a\u2028b\u2029c\u202ed\u2066e\u00adf") == "abcdef"
    assert clean_message("caf\u00e9 \u4f60\u597d \U0001f600") == "caf\u00e9 \u4f60\u597d \U0001f600"
    assert clean_message(" \n\t \u200b") is None and clean_message(42) is None


async def test_retry_after_of_bubblehouse_429_is_kept() -> None:
    """Bubblehouse's Retry-After, when it sends one, is passed on."""
    upstream, _ = upstream_with(
        reply(429, {"id": "rate_limit_exceeded"}, headers={"retry-after": "7"})
    )
    with pytest.raises(UpstreamRateLimited) as caught:
        await call(upstream)
    assert caught.value.retry_after == 7 and caught.value.headers()["Retry-After"] == "7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7),
        ("000042", 42),
        ("999999", 3600),
        ("0", 1),
        ("9" * 5000, 1),
        ("1234567", 1),
        ("\u00b2", 1),
        ("\u0663", 1),
        ("-5", 1),
        ("1.5", 1),
        ("", 1),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1),
        ("Wed, 21 Oct 2015 07:28:00 GMT" + " " * 5000 + "x", 1),
        ("not a date at all", 1),
    ],
)
async def test_retry_after_of_bubblehouse_is_bounded_before_conversion(
    value: str, expected: int
) -> None:
    """Only 1-6 ASCII digits (or an HTTP date) are read; anything else means 1 s, never a 500."""
    upstream, _ = upstream_with(
        reply(429, {"id": "rate_limit_exceeded"}, headers={"retry-after": value})
    )
    with pytest.raises(UpstreamRateLimited) as caught:
        await call(upstream)
    assert caught.value.retry_after == expected


async def test_retry_after_as_an_http_date_counts_from_now() -> None:
    """An HTTP-date Retry-After becomes the seconds until then, bounded to an hour."""
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    later = format_datetime(datetime.now(UTC) + timedelta(days=3), usegmt=True)
    for value, low, high in ((soon, 100, 120), (later, 3600, 3600)):
        upstream, _ = upstream_with(
            reply(429, {"id": "rate_limit_exceeded"}, headers={"retry-after": value})
        )
        with pytest.raises(UpstreamRateLimited) as caught:
            await call(upstream)
        assert low <= caught.value.retry_after <= high


@pytest.mark.parametrize(
    ("failure", "error", "reached"),
    [
        (ConnectFailed("refused"), UpstreamUnavailable, False),
        (ConnectTimeout("slow connect"), UpstreamUnavailable, False),
        (ReadTimeout("slow answer"), UpstreamTimeout, True),
        (ConnectionBroken("reset"), UpstreamError, True),
        (UndecodableBody("corrupt gzip"), UpstreamError, True),
        (BodyTooLarge("12 MB"), UpstreamError, True),
        (RuntimeError("a bug below"), UpstreamError, True),
        (ValueError("another"), UpstreamError, True),
    ],
)
async def test_transport_failures_become_broker_errors(
    failure: Exception, error: type[BrokerError], reached: bool
) -> None:
    """Each transport failure, and anything unexpected, is a broker error (never a 500)."""
    upstream, _ = upstream_with(raising(failure))
    with pytest.raises(error) as caught:
        await call(upstream, function="Refer2", retry_connect=False)
    assert type(caught.value) is error
    assert caught.value.reached_upstream is reached
    assert caught.value.status != 500


async def test_refused_connection_is_retried_once_then_unavailable() -> None:
    """A refused connection is tried twice (it never reached Bubblehouse), then 503."""
    upstream, fake = upstream_with(raising(ConnectFailed("refused")))
    with pytest.raises(UpstreamUnavailable):
        await call(upstream)
    assert len(fake.requests) == 2


async def test_refused_connection_then_success_succeeds() -> None:
    """A single refused connection followed by an answer is invisible to the caller."""
    attempts: list[int] = []

    def handler(path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectFailed("refused")
        return Answer(200, {}, b'{"referrals": []}')

    upstream, _ = upstream_with(handler)
    assert orjson.loads(await call(upstream)) == {"referrals": []}


async def test_no_retry_when_disallowed_nor_after_connect_timeout_or_broken_connection() -> None:
    """Without retry_connect one attempt; a connect timeout or a broken answer is not retried."""
    for failure, retry in (
        (ConnectFailed("refused"), False),
        (ConnectTimeout("slow"), True),
        (ConnectionBroken("peer closed"), True),
    ):
        upstream, fake = upstream_with(raising(failure))
        with pytest.raises(BrokerError):
            await call(upstream, retry_connect=retry)
        assert len(fake.requests) == 1


async def test_whole_call_is_bounded_by_the_upstream_timeout() -> None:
    """A transport that never returns is cut at BROKER_UPSTREAM_TIMEOUT: upstream_timeout."""

    async def hang(path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    fake = FakeTransport(hang)
    upstream = Upstream.create(make_settings(BROKER_UPSTREAM_TIMEOUT="0.2"), fake)
    info = CallInfo()
    with pytest.raises(UpstreamTimeout):
        await call(upstream, info=info)
    assert info.outcome == "timeout"


# --- the production transport over real sockets ----------------------------------------------


def over_the_wire(url: str) -> Upstream:
    """The production Upstream (aiohttp transport) against ``url``."""
    return Upstream.create(make_settings(BROKER_UPSTREAM_URL=url, BROKER_UPSTREAM_TIMEOUT="1"))


WIRE_CASES = {
    "non-json": (answer(200, b"<html>hello</html>"), UpstreamError),
    "json-not-object": (answer(200, b"[1, 2, 3]"), UpstreamError),
    "corrupt-gzip": (
        answer(200, b"\x1f\x8b\x08\x00" + b"\x01" * 40, {"Content-Encoding": "gzip"}),
        UpstreamError,
    ),
    "corrupt-deflate": (
        answer(200, b"\x78\x9c" + b"\xff" * 40, {"Content-Encoding": "deflate"}),
        UpstreamError,
    ),
    "bomb": (
        answer(200, gzipped(b"{" + b" " * (8 * 1024 * 1024)), {"Content-Encoding": "gzip"}),
        UpstreamError,
    ),
    "reset": (
        reset_after(answer(200, b"", {"Content-Length": "900"}).replace(b"0\r\n", b"", 1)),
        UpstreamError,
    ),
    "read-timeout": (stall, UpstreamTimeout),
    "5xx-html": (answer(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"}), None),
    "401-other-id": (answer(401, b'{"id": "token_revoked"}'), UpstreamMisconfigured),
    "429-long-retry-after": (
        answer(429, b'{"id": "rate_limit_exceeded"}', {"Retry-After": "9" * 5000}),
        UpstreamRateLimited,
    ),
    "429-superscript-retry-after": (
        # the UTF-8 bytes of a superscript two, which str.isdigit() calls a digit
        answer(429, b'{"id": "rate_limit_exceeded"}', {"Retry-After": "\u00c2\u00b2"}),
        UpstreamRateLimited,
    ),
}


@pytest.mark.parametrize("case", sorted(WIRE_CASES))
async def test_failures_over_a_real_socket(case: str) -> None:
    """Each misbehaviour on the wire becomes its broker error through the production transport."""
    raw, error = WIRE_CASES[case]
    with RawUpstream(raw) as server:
        upstream = over_the_wire(server.url)
        try:
            with pytest.raises(error or UpstreamError) as caught:
                await call(upstream, function="Refer2", retry_connect=False)
        finally:
            await upstream.aclose()
    assert caught.value.status in (429, 502, 504)
    assert len(server.requests) == 1


async def test_refused_and_connect_timeout_over_a_real_socket() -> None:
    """Refused (tried twice) and a connect that hangs are upstream_unavailable, not reached."""
    upstream = over_the_wire(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(UpstreamUnavailable) as refused:
            await call(upstream)
    finally:
        await upstream.aclose()
    with full_backlog() as url:
        upstream = Upstream.create(
            make_settings(BROKER_UPSTREAM_URL=url, BROKER_UPSTREAM_TIMEOUT="0.3")
        )
        try:
            with pytest.raises(UpstreamUnavailable) as hung:
                await call(upstream, function="Refer2")
        finally:
            await upstream.aclose()
    assert not refused.value.reached_upstream and not hung.value.reached_upstream
