"""Bubblehouse failures over HTTP: each becomes its error id; stale history when allowed."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx2
import pytest

from broker.upstream.transport import Answer, FakeTransport
from broker.web.app import create_app
from tests.rawhttp import RawUpstream, answer, endless, gzipped
from tests.servers import free_port, serve_app
from tests.stack import READ_PATH, Broker, Sandbox, running_broker
from tests.support import make_settings


@pytest.mark.parametrize(
    ("fault", "status", "error_id"),
    [
        ({"status": 500}, 502, "upstream_error"),
        ({"status": 503}, 502, "upstream_error"),
        ({"html": True}, 502, "upstream_error"),
        ({"reject_tokens": True}, 502, "upstream_misconfigured"),
        ({"status": 401, "id": "token_revoked"}, 502, "upstream_misconfigured"),
        ({"status": 401, "id": "invalid_token", "message": "x"}, 502, "upstream_misconfigured"),
        ({"status": 400, "id": "invalid_global_api_version"}, 502, "upstream_misconfigured"),
        ({"status": 400, "id": "obsolete_global_api_version"}, 502, "upstream_misconfigured"),
        ({"status": 400, "id": "missing_customer_identity"}, 400, "missing_customer_identity"),
        ({"status": 404, "id": "empty_customer_identity"}, 404, "empty_customer_identity"),
        (
            {"status": 404, "id": "no_customers_match_customer_identity"},
            404,
            "no_customers_match_customer_identity",
        ),
        (
            {"status": 404, "id": "customer_identity_partially_mismatches_matched_customer"},
            404,
            "customer_identity_partially_mismatches_matched_customer",
        ),
        (
            {"status": 403, "id": "customer_identity_does_not_match_token"},
            403,
            "customer_identity_does_not_match_token",
        ),
        ({"status": 422, "id": "referral_program_disabled"}, 422, "referral_program_disabled"),
        ({"rate_limit": True}, 429, "rate_limit_exceeded"),
    ],
)
def test_upstream_answers_become_broker_errors(
    broker: Broker, sandbox: Sandbox, fault: dict[str, Any], status: int, error_id: str
) -> None:
    """Each Bubblehouse failure is one stable problem+json error a browser can read."""
    sandbox.fault(**fault)
    for response in (broker.read(), broker.refer({"channel": "sms"})):
        assert response.status_code == status, response.text
        body = response.json()
        assert body["id"] == error_id
        assert response.headers["content-type"] == "application/problem+json"
        assert "<html" not in response.text and "127.0.0.1" not in response.text
        if status == 429:
            assert int(response.headers["retry-after"]) >= 1 and body["retry_after"] >= 1


def test_bubblehouse_4xx_message_is_passed_on_as_upstream_message(
    broker: Broker, sandbox: Sandbox
) -> None:
    """A Refer2 refusal's message reaches the browser as upstream_message (cleaned), a read's
    never; message stays ours."""
    sandbox.fault(
        status=422,
        id="referral_program_disabled",
        message="Referrals are\u0007 paused\n\u2028 today.\u202e\u200b",
    )
    read, sent = broker.read(), broker.refer({"channel": "sms"})
    for response in (read, sent):
        body = response.json()
        assert response.status_code == 422 and body["upstream_status"] == 422
        assert "today" not in body["message"]
    assert sent.json()["upstream_message"] == "Referrals are paused today."
    assert "upstream_message" not in read.json()


@pytest.mark.parametrize(
    ("fault", "status", "error_id"),
    [
        (
            {"status": 401, "id": "invalid_token", "message": "secret kid k1 not found"},
            502,
            "upstream_misconfigured",
        ),
        (
            {"status": 429, "id": "rate_limit_exceeded", "message": "kid k1"},
            429,
            "rate_limit_exceeded",
        ),
        ({"status": 400, "id": "invalid_input", "message": "kid k1"}, 502, "upstream_error"),
        ({"status": 404, "id": "not_found", "message": "kid k1"}, 502, "upstream_error"),
        ({"status": 400, "id": "missing_token", "message": "kid k1"}, 502, "upstream_error"),
        ({"status": 407, "id": "proxy_auth", "message": "kid k1"}, 502, "upstream_error"),
    ],
)
def test_bubblehouse_text_and_ids_the_broker_owns_never_reach_the_browser(
    broker: Broker, sandbox: Sandbox, fault: dict[str, Any], status: int, error_id: str
) -> None:
    """Bubblehouse's 401 text, its 429 text, a broker-owned id or a 407 never reach a shopper."""
    sandbox.fault(**fault)
    for response in (broker.read(), broker.refer({"channel": "sms"})):
        assert response.status_code == status, response.text
        body = response.json()
        assert body["id"] == error_id and "field" not in body
        assert "k1" not in response.text and "upstream_message" not in body


def test_nothing_of_a_5xx_reaches_the_browser(broker: Broker, sandbox: Sandbox) -> None:
    """A 5xx's message is never passed on, as upstream_message or otherwise."""
    sandbox.fault(status=500, message="internal detail: db shard 7")
    response = broker.read()
    assert response.status_code == 502 and "upstream_message" not in response.json()
    assert "shard" not in response.text


def test_timeout_is_504(sandbox: Sandbox) -> None:
    """A Bubblehouse slower than BROKER_UPSTREAM_TIMEOUT gives 504 upstream_timeout."""
    with running_broker(sandbox.url, BROKER_UPSTREAM_TIMEOUT="0.3") as broker:
        sandbox.fault(delay=2)
        response = broker.read()
        assert response.status_code == 504 and response.json()["id"] == "upstream_timeout"
        assert response.json()["retryable"] is True


def test_unreachable_upstream_is_503() -> None:
    """Nothing listening at the upstream URL gives 503 upstream_unavailable."""
    with running_broker(f"http://127.0.0.1:{free_port()}") as broker:
        response = broker.read()
        assert response.status_code == 503
        assert response.json()["id"] == "upstream_unavailable"


def test_dropped_connection_is_502(broker: Broker, sandbox: Sandbox) -> None:
    """A connection closed without an answer is upstream_error."""
    sandbox.fault(drop=True)
    assert broker.read().json()["id"] == "upstream_error"


def test_refer_is_never_retried_after_reaching_bubblehouse(
    sandbox: Sandbox,
) -> None:
    """A Refer2 that failed or timed out upstream was sent exactly once."""
    with running_broker(sandbox.url, BROKER_UPSTREAM_TIMEOUT="0.3") as broker:
        sandbox.fault(status=500, times=1, functions=["Refer2"])
        assert broker.refer({"channel": "sms"}).status_code == 502
        sandbox.fault(delay=1, times=1, functions=["Refer2"])
        assert broker.refer({"channel": "sms"}).status_code == 504
        sandbox.fault(drop=True, times=1, functions=["Refer2"])
        assert broker.refer({"channel": "sms"}).status_code == 502
        assert sandbox.calls()["Refer2"] == 3


@pytest.mark.parametrize(
    "fault",
    [{"status": 500}, {"rate_limit": True}, {"delay": 2}, {"html": True}],
    ids=["5xx", "429", "timeout", "html"],
)
def test_stale_history_is_served_when_bubblehouse_fails(
    sandbox: Sandbox, fault: dict[str, Any]
) -> None:
    """Within the stale window a failing Bubblehouse gives the last good body, marked stale."""
    with running_broker(
        sandbox.url,
        BROKER_CACHE_TTL="1",
        BROKER_CACHE_STALE_TTL="60",
        BROKER_UPSTREAM_TIMEOUT="0.5",
    ) as broker:
        good = broker.read()
        assert good.status_code == 200
        time.sleep(1.3)
        sandbox.fault(**fault)
        stale = broker.read()
        assert stale.status_code == 200, stale.text
        assert "fwd=stale" in stale.headers["cache-status"]
        assert stale.content == good.content


def test_unreachable_bubblehouse_serves_stale(sandbox: Sandbox) -> None:
    """When Bubblehouse stops answering at all, the cached body is served stale."""
    from tests.stack import sandbox_app

    with (
        serve_app(sandbox_app()) as own_sandbox,
        running_broker(own_sandbox.url, BROKER_CACHE_TTL="1") as broker,
    ):
        good = broker.read()
        own_sandbox.server.should_exit = True
        time.sleep(1.3)
        stale = broker.read()
        assert stale.status_code == 200 and "fwd=stale" in stale.headers["cache-status"]
        assert stale.content == good.content


def test_errors_are_never_cached(broker: Broker, sandbox: Sandbox) -> None:
    """A failed read is not stored: the next read calls Bubblehouse again and succeeds."""
    sandbox.fault(status=500, times=1)
    assert broker.read().status_code == 502
    response = broker.read()
    assert response.status_code == 200
    assert "fwd=miss" in response.headers["cache-status"]


def test_a_transport_raising_anything_is_upstream_error_not_500() -> None:
    """Whatever a transport raises becomes 502 upstream_error, never a 500, and no detail."""

    def broken(path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        raise RuntimeError("secret internal detail")

    settings = make_settings(BROKER_UPSTREAM_URL="http://bubblehouse.test")
    app = create_app(settings, upstream_transport=FakeTransport(broken))
    from broker.rules.tokens import TokenMinter

    token = TokenMinter(settings).customer_token("alice").token
    with serve_app(app) as server, httpx2.Client(base_url=server.url) as client:
        response = client.post(READ_PATH, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 502
    body = response.json()
    assert body["id"] == "upstream_error" and body["request_id"] == response.headers["x-request-id"]
    assert "secret" not in response.text and "Traceback" not in response.text


CORRUPT_GZIP = answer(200, b"\x1f\x8b\x08\x00" + b"\x01" * 64, {"Content-Encoding": "gzip"})
GOOD = b'{"referrals": [], "served_by": "raw"}'


def test_corrupt_gzip_send_is_502_and_its_key_replays_without_a_second_send() -> None:
    """A Refer2 answered with corrupt gzip is 502 upstream_error (never 500); it may have been
    carried out, so a retry with the same Idempotency-Key replays that answer and never reaches
    Bubblehouse again."""
    with RawUpstream(CORRUPT_GZIP) as raw, running_broker(raw.url) as broker:
        key = {"Idempotency-Key": "send-1"}
        first = broker.refer({"channel": "sms"}, headers=key)
        assert first.status_code == 502, first.text
        assert first.json()["id"] == "upstream_error"
        again = broker.refer({"channel": "sms"}, headers=key)
        assert again.status_code == 502 and again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == "upstream_error"
        assert len(raw.requests) == 1


def test_unusable_answers_back_one_customer_off_and_free_the_key() -> None:
    """After an unusable answer, that customer's next send is refused for a few seconds
    without a call (Retry-After), its key left free; another customer is called as usual."""
    with (
        RawUpstream(answer(200, b"<html>not json</html>")) as raw,
        running_broker(raw.url, BROKER_UPSTREAM_BACKOFF="30") as broker,
    ):
        assert broker.refer({"channel": "sms"}).status_code == 502
        held = broker.refer({"channel": "sms"}, headers={"Idempotency-Key": "k"})
        assert held.status_code == 502 and held.json()["id"] == "upstream_error"
        assert 1 <= int(held.headers["retry-after"]) <= 30 and held.json()["retry_after"] >= 1
        assert len(raw.requests) == 1
        assert broker.refer({"channel": "sms"}, customer="bob").status_code == 502
        assert len(raw.requests) == 2
        # The held send was never sent: its key is free (not replayed).
        again = broker.refer({"channel": "sms"}, headers={"Idempotency-Key": "k"})
        assert "idempotent-replayed" not in again.headers


@pytest.mark.parametrize("retry_after", ["9" * 5000, "\u00c2\u00b2", "soon"])
def test_bubblehouse_429_with_an_odd_retry_after_serves_the_stale_list(retry_after: str) -> None:
    """A 429 whose Retry-After is 5000 digits or not ASCII is ignored: stale list, or 429 (1 s)."""
    limited = answer(429, b'{"id": "rate_limit_exceeded"}', {"Retry-After": retry_after})
    with (
        RawUpstream(answer(200, GOOD), limited) as raw,
        running_broker(raw.url, BROKER_CACHE_TTL="1", BROKER_CACHE_STALE_TTL="60") as broker,
    ):
        assert broker.read().content == GOOD
        time.sleep(1.3)
        stale = broker.read()
        assert stale.status_code == 200, stale.text
        assert "fwd=stale" in stale.headers["cache-status"] and stale.content == GOOD
        refused = broker.read(customer="bob")
        assert refused.status_code == 429 and refused.json()["id"] == "rate_limit_exceeded"
        assert refused.headers["retry-after"] == "1" and "upstream_message" not in refused.json()


@pytest.mark.parametrize("kind", ["corrupt-gzip", "endless-chunked"])
def test_unusable_read_falls_back_to_the_stale_list(kind: str) -> None:
    """A read answered with corrupt gzip or an endless chunked body serves the stale list."""
    head = answer(200, headers={"Transfer-Encoding": "chunked"}, length=False)
    bad = CORRUPT_GZIP if kind == "corrupt-gzip" else endless(head, lambda: b" " * 65536)
    with (
        RawUpstream(answer(200, GOOD), bad) as raw,
        running_broker(raw.url, BROKER_CACHE_TTL="1", BROKER_CACHE_STALE_TTL="60") as broker,
    ):
        assert broker.read().content == GOOD
        time.sleep(1.3)
        stale = broker.read()
        assert stale.status_code == 200 and "fwd=stale" in stale.headers["cache-status"]
        assert stale.content == GOOD
        fresh_customer = broker.read(customer="bob")
        assert fresh_customer.status_code == 502
        assert fresh_customer.json()["id"] == "upstream_error"


def test_oversized_gzip_read_is_502_and_not_cached() -> None:
    """70 KB of gzip inflating to 64 MB is refused (502), not passed on nor cached."""
    bomb = answer(200, gzipped(b"{" + b" " * (64 * 1024 * 1024)), {"Content-Encoding": "gzip"})
    with (
        RawUpstream(bomb, answer(200, GOOD)) as raw,
        running_broker(raw.url, BROKER_UPSTREAM_BACKOFF="0") as broker,
    ):
        response = broker.read()
        assert response.status_code == 502 and response.json()["id"] == "upstream_error"
        assert broker.read().content == GOOD
        assert len(raw.requests) == 2


def test_metrics_show_the_upstream_circuit(sandbox: Sandbox) -> None:
    """/metrics shows the circuit to Bubblehouse closed, then open once 5xx pass the rate."""
    from tests.integration.test_api_redis import metric

    with running_broker(sandbox.url, BROKER_CIRCUIT_MIN_CALLS="5") as broker:
        broker.read()
        text = broker.client.get("/metrics").text
        assert metric(text, "broker_breaker_state", name="upstream", state="closed") == 1
        sandbox.fault(status=500)
        for customer in ("c1", "c2", "c3", "c4"):  # with the first read: 4 of 5 failed
            assert broker.read(customer=customer).status_code == 502
        text = broker.client.get("/metrics").text
        assert metric(text, "broker_breaker_state", name="upstream", state="open") == 1
        assert metric(text, "broker_breaker_state", name="upstream", state="closed") == 0
        assert broker.read(customer="c6").json()["id"] == "upstream_unavailable"


def test_a_half_open_trial_answered_with_corrupt_gzip_does_not_stick_the_circuit() -> None:
    """The trial after the cool-down gets corrupt gzip (502): Bubblehouse answered, so the
    circuit closes and the next read goes through, instead of staying open until restart."""
    with (
        RawUpstream(answer(503, b"{}"), CORRUPT_GZIP, answer(200, GOOD)) as raw,
        running_broker(
            raw.url, BROKER_CIRCUIT_MIN_CALLS="1", BROKER_CIRCUIT_COOLDOWN="0.3"
        ) as broker,
    ):
        assert broker.read(customer="c1").status_code == 502
        assert broker.read(customer="c2").json()["id"] == "upstream_unavailable"
        time.sleep(0.4)
        trial = broker.read(customer="c3")
        assert trial.status_code == 502 and trial.json()["id"] == "upstream_error"
        after = broker.read(customer="c4")
        assert after.status_code == 200 and after.content == GOOD
        assert len(raw.requests) == 3
