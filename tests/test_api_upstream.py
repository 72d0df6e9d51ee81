"""Bubblehouse failures over real HTTP: each becomes its error id; stale history when allowed."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest

from broker.app import create_app
from tests.conftest import make_settings
from tests.servers import free_port, serve_app
from tests.stack import READ_PATH, Broker, Sandbox, running_broker


@pytest.mark.parametrize(
    ("fault", "status", "error_id"),
    [
        ({"status": 500}, 502, "upstream_error"),
        ({"status": 503}, 502, "upstream_error"),
        ({"html": True}, 502, "upstream_error"),
        ({"reject_tokens": True}, 502, "upstream_misconfigured"),
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


def test_upstream_message_is_written_by_the_broker(broker: Broker, sandbox: Sandbox) -> None:
    """Bubblehouse's own message text is never relayed; the broker writes its own."""
    sandbox.fault(
        status=404, id="no_customers_match_customer_identity", message="internal detail: db shard 7"
    )
    body = broker.read().json()
    assert "shard" not in body["message"] and body["upstream_status"] == 404


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


def test_internal_error_is_a_clean_500() -> None:
    """A bug (a transport raising something unexpected) is 500 internal_error, with no trace."""

    def broken(request: httpx2.Request) -> httpx2.Response:
        raise RuntimeError("secret internal detail")

    settings = make_settings(BROKER_UPSTREAM_URL="http://bubblehouse.test")
    app = create_app(settings, upstream_transport=httpx2.MockTransport(broken))
    from broker.tokens import TokenMinter

    token = TokenMinter(settings).customer_token("alice").token
    with serve_app(app) as server, httpx2.Client(base_url=server.url) as client:
        response = client.post(READ_PATH, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 500
    body = response.json()
    assert body["id"] == "internal_error" and body["request_id"] == response.headers["x-request-id"]
    assert "secret" not in response.text and "Traceback" not in response.text


def test_metrics_show_the_upstream_circuit(broker: Broker, sandbox: Sandbox) -> None:
    """/metrics shows the circuit to Bubblehouse closed, then open after five failures."""
    from tests.test_api_redis import metric

    broker.read()
    text = broker.client.get("/metrics").text
    assert metric(text, "broker_breaker_state", name="upstream", state="closed") == 1
    sandbox.fault(status=500)
    for customer in ("c1", "c2", "c3", "c4", "c5"):
        assert broker.read(customer=customer).status_code == 502
    text = broker.client.get("/metrics").text
    assert metric(text, "broker_breaker_state", name="upstream", state="open") == 1
    assert metric(text, "broker_breaker_state", name="upstream", state="closed") == 0
