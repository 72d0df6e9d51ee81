"""Logs: one request event per request with its story, and never a secret, email or token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from broker import __version__
from broker.services import running
from broker.telemetry.logs import configure_logging, customer_hash, hash_key
from broker.telemetry.metrics import Metrics
from broker.telemetry.tracing import Tracing
from tests.servers import RedisProcess
from tests.stack import READ_PATH, Broker, Sandbox, running_broker
from tests.support import ISSUER_KEY, SECRET_A, SECRET_B, make_settings


@pytest.fixture
def json_logs(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """The production JSON log setup, writing into capfd, restored to structlog's defaults after."""
    configure_logging("debug", "json")
    yield
    structlog.reset_defaults()


def test_request_event_tells_the_story(broker: Broker, sandbox: Sandbox) -> None:
    """Each request logs one 'request' event with route, status, cache, upstream and ids."""
    with capture_logs() as events:
        broker.client.post(
            READ_PATH,
            headers={
                **broker.auth("alice"),
                "X-Request-ID": "story-1",
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            },
        )
    request = [e for e in events if e["event"] == "request"]
    assert len(request) == 1
    event = request[0]
    assert event["route"] == "/api/{version}/{shop}/CustomerReferrals2"
    assert event["status"] == 200 and event["method"] == "POST"
    assert event["request_id"] == "story-1"
    assert event["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert event["cache"] == "miss" and event["upstream_status"] == 200
    assert event["customer"] != "alice" and len(event["customer"]) == 16
    # The call to Bubblehouse crossed a real socket inside the request: both were timed.
    assert 0 < event["upstream_ms"] <= event["duration_ms"]
    seen = sandbox.requests()[-1]
    assert seen["headers"]["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert "b7ad6b7169203331" not in seen["headers"]["traceparent"]


def test_bad_request_id_is_replaced(broker: Broker) -> None:
    """An X-Request-ID outside [A-Za-z0-9._-]{1,128} is replaced by a fresh one."""
    for bad in ("has space", "x" * 129, "semi;colon"):
        response = broker.client.get("/healthz", headers={"X-Request-ID": bad})
        assert response.headers["x-request-id"] != bad
        assert len(response.headers["x-request-id"]) == 32


def test_error_request_logs_its_id(broker: Broker) -> None:
    """A refused request logs the error id."""
    with capture_logs() as events:
        broker.client.post(READ_PATH)
    assert [e["error_id"] for e in events if e["event"] == "request"] == ["missing_token"]


def test_refused_token_logs_its_reason_and_the_client_address(wire_broker: Broker) -> None:
    """A 401 invalid_token request line carries the reason and the client's address, so a
    guesser can be traced without the proxy's log."""
    with capture_logs() as events:
        wire_broker.client.post(READ_PATH, headers={"Authorization": "Bearer not.a.jwt"})
    [line] = [e for e in events if e["event"] == "request"]
    assert line["error_id"] == "invalid_token" and line["reason"] == "malformed"
    assert line["client"] == "127.0.0.1"


def test_customer_hash_is_keyed_and_stable() -> None:
    """A customer hashes to a fixed value under one key (HMAC-SHA-256 of the id, 16 hex digits),
    differently under another key, and differently from another customer."""
    expected = hmac.new(b"k1", b"alice", hashlib.sha256).hexdigest()[:16]
    assert customer_hash(b"k1", "alice") == expected
    assert customer_hash(b"k2", "alice") != expected
    assert customer_hash(b"k1", "bob") != expected


def test_no_secret_reaches_the_logs(
    broker: Broker, sandbox: Sandbox, json_logs: None, capfd: pytest.CaptureFixture[str]
) -> None:
    """Tokens, keys, secrets, emails and destinations used in a full flow appear in no log line."""
    minted = broker.client.post(
        "/tokens",
        headers=broker.issuer(),
        json={"customer_id": "logged-customer", "email": "shopper.private@example.com"},
    ).json()["token"]
    auth = {"Authorization": f"Bearer {minted}"}
    broker.client.post(READ_PATH, headers=auth)
    broker.client.post(
        READ_PATH, headers=auth, json={"customer": {"email": "someone.else@example.com"}}
    )
    broker.refer(
        {"channel": "email", "destination": "friend.private@example.com"},
        customer="logged-customer",
        headers={"Idempotency-Key": "idem-secret-key"},
    )
    broker.client.post("/tokens", headers={"Authorization": "Bearer wrong-issuer-attempt-xyz"})
    sandbox.fault(status=500, message="upstream secret text")
    broker.client.post(READ_PATH, headers={**auth, "X-Request-ID": "after-fault"})
    out = capfd.readouterr().out
    lines = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "request" for line in lines)
    for secret in (
        minted,
        minted.split(".")[2],
        ISSUER_KEY,
        SECRET_A,
        SECRET_B,
        "wrong-issuer-attempt-xyz",
        "shopper.private",
        "friend.private",
        "someone.else",
        "logged-customer",
        "upstream secret text",
        "Bearer",
    ):
        assert secret not in out, secret


def json_lines(capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if line]


def test_exception_is_logged_with_type_message_and_traceback(
    json_logs: None, capfd: pytest.CaptureFixture[str]
) -> None:
    """log.exception in JSON carries the exception's type, message and frames, not its locals."""
    log = structlog.get_logger("test")

    def fail(secret_local: str) -> None:
        raise KeyError("the-missing-key")

    try:
        fail("local-value-never-logged")
    except KeyError:
        log.exception("request.internal_error", route="/x")
    [line] = json_lines(capfd)
    [exception] = line["exception"]
    assert exception["exc_type"] == "KeyError" and "the-missing-key" in exception["exc_value"]
    assert [frame["name"] for frame in exception["frames"]][-1] == "fail"
    assert line["level"] == "error" and "exc_info" not in line
    assert "local-value-never-logged" not in orjson.dumps(line).decode()


def test_every_line_carries_the_process_and_version(
    json_logs: None, capfd: pytest.CaptureFixture[str]
) -> None:
    """Any event, outside a request too, names the process id and the broker version."""
    structlog.get_logger("test").info("anything.happened")
    [line] = json_lines(capfd)
    assert line["pid"] == os.getpid() and line["version"] == __version__


def test_events_inside_a_request_carry_its_ids(
    json_logs: None, capfd: pytest.CaptureFixture[str]
) -> None:
    """An event logged while serving a request (the circuit opening) carries its request and
    trace ids."""
    trace = "0af7651916cd43dd8448eb211c80319c"
    # Nothing listens there; the circuit judges from five calls on.
    with running_broker("http://127.0.0.1:9", BROKER_CIRCUIT_MIN_CALLS="5") as broker:
        token = broker.token()
        for number in range(1, 6):
            broker.client.post(
                READ_PATH,
                headers={
                    "Authorization": f"Bearer {token}",
                    "X-Request-ID": f"read-{number}",
                    "traceparent": f"00-{trace}-b7ad6b7169203331-01",
                },
            )
    [opened] = [line for line in json_lines(capfd) if line["event"] == "upstream.circuit_open"]
    assert opened["request_id"] == "read-5" and opened["trace_id"] == trace


async def test_customer_hash_survives_rotation_and_is_shared(redis_session: RedisProcess) -> None:
    """Instances on one Redis hash a customer alike, before and after a signing-key rotation
    (the key is a secret they share in Redis, not the signing key); without Redis, a process
    hashes with its signing secret."""
    before = f"key-a:{SECRET_A},key-b:{SECRET_B}"
    after = f"key-b:{SECRET_B}"  # key-a retired: key-b signs now
    seen = []
    for signing in (before, after, before):
        settings = make_settings(REDIS_URL=redis_session.url, BROKER_SIGNING_KEYS=signing)
        async with running(settings, metrics=Metrics(), tracing=Tracing.disabled()) as svc:
            seen.append(customer_hash(svc.log_key, "alice"))
    assert seen[0] == seen[1] == seen[2]
    alone = make_settings(BROKER_SIGNING_KEYS=after)
    async with running(alone, metrics=Metrics(), tracing=Tracing.disabled()) as svc:
        assert svc.log_key == hash_key(base64.b64decode(SECRET_B))
