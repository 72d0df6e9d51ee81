"""Refer2 over HTTP: input rules, pass-through, read-your-writes and idempotency."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest

from tests.stack import WRITE_PATH, Broker, Sandbox


def test_sends_an_email_referral_and_passes_the_answer_through(
    broker: Broker, sandbox: Sandbox
) -> None:
    """A valid email referral reaches Bubblehouse once and its answer comes back unchanged."""
    response = broker.refer({"channel": "email", "destination": "friend@example.com"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["referral"]["channel"] == "email"
    assert body["share_action"] == {"type": "none"}
    assert response.headers["cache-control"] == "no-store"
    assert "ratelimit" in response.headers
    seen = sandbox.requests()[-1]
    assert seen["body"] == {"channel": "email", "destination": "friend@example.com"}
    assert sandbox.calls()["Refer2"] == 1


@pytest.mark.parametrize(
    "channel",
    [
        "sms",
        "facebook",
        "messenger",
        "whatsapp",
        "twitter",
        "instagram",
        "threads",
        "telegram",
        "qr-code",
        "custom-personal",
        "custom-social",
        "carrier-pigeon",
        "x9",
    ],
)
def test_every_channel_slug_passes_through(broker: Broker, channel: str) -> None:
    """The twelve documented channels and new slugs are all accepted (the list is open)."""
    response = broker.refer({"channel": channel, "destination": None})
    assert response.status_code == 200, response.text
    assert response.json()["referral"]["channel"] == channel


def test_sender_and_matching_customer_are_dropped(broker: Broker, sandbox: Sandbox) -> None:
    """sender is accepted and dropped; a matching customer is checked and dropped."""
    response = broker.refer(
        {"channel": "sms", "sender": "me@example.com", "customer": {"shopid": "alice"}}
    )
    assert response.status_code == 200
    assert sandbox.requests()[-1]["body"] == {"channel": "sms"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "channel"),
        ({"channel": None}, "channel"),
        ({"channel": "Email"}, "channel"),
        ({"channel": "-sms"}, "channel"),
        ({"channel": "a" * 65}, "channel"),
        ({"channel": "e mail"}, "channel"),
        ({"channel": 3}, "channel"),
        ({"channel": "email"}, "destination"),
        ({"channel": "email", "destination": None}, "destination"),
        ({"channel": "email", "destination": "not-an-email"}, "destination"),
        ({"channel": "email", "destination": "a@b"}, "destination"),
        ({"channel": "email", "destination": "a b@example.com"}, "destination"),
        ({"channel": "email", "destination": "x" * 250 + "@example.com"}, "destination"),
        ({"channel": "email", "destination": ["a@example.com"]}, "destination"),
        ({"channel": "sms", "destination": "+15551234567"}, "destination"),
        ({"channel": "sms", "sender": 5}, "sender"),
        ({"channel": "sms", "note": "hi"}, "note"),
        ({"channel": "sms", "customer": {"shopid": 1}}, "customer.shopid"),
    ],
)
def test_bad_refer_input_names_the_field(
    broker: Broker, sandbox: Sandbox, body: dict[str, Any], field: str
) -> None:
    """Each invalid Refer2 body is 400 invalid_input naming the field; Bubblehouse is not called."""
    response = broker.refer(body)
    assert response.status_code == 400, response.text
    assert response.json()["id"] == "invalid_input"
    assert response.json()["field"] == field
    assert sandbox.total_calls() == 0


def test_identity_mismatch_on_refer_is_refused(broker: Broker, sandbox: Sandbox) -> None:
    """Refer2 with another customer's shopid is 403 and nothing is sent."""
    response = broker.refer({"channel": "sms", "customer": {"shopid": "bob"}})
    assert response.status_code == 403
    assert response.json()["id"] == "customer_identity_does_not_match_token"
    assert sandbox.total_calls() == 0


def test_refer_is_post_only(broker: Broker) -> None:
    """GET Refer2 is 405 method_not_allowed."""
    response = broker.client.get(WRITE_PATH, headers=broker.auth())
    assert response.status_code == 405 and response.json()["id"] == "method_not_allowed"
    assert response.headers["allow"] == "POST, OPTIONS"


def test_next_read_after_refer_shows_the_new_referral(broker: Broker, sandbox: Sandbox) -> None:
    """A read cached before a send is invalidated: the next read includes the new referral."""
    before = broker.read("alice").json()
    assert broker.read("alice").headers["cache-status"].startswith("broker; hit")
    sent = broker.refer({"channel": "whatsapp"}).json()["referral"]
    after = broker.read("alice")
    assert after.headers["cache-status"].startswith("broker; fwd=miss")
    ids = [row["referral_bhid"] for row in after.json()["referrals"]]
    assert sent["referral_bhid"] in ids
    assert len(after.json()["referrals"]) == len(before["referrals"]) + 1


def test_send_by_one_customer_keeps_anothers_cache(broker: Broker, sandbox: Sandbox) -> None:
    """Bob's send does not invalidate Alice's cached history."""
    broker.read("alice")
    broker.refer({"channel": "sms"}, customer="bob")
    assert broker.read("alice").headers["cache-status"].startswith("broker; hit")


def test_idempotency_key_replays_the_first_answer(broker: Broker, sandbox: Sandbox) -> None:
    """The same key and body twice: one send upstream, the same answer twice, marked replayed."""
    headers = {"Idempotency-Key": "order-123-referral"}
    body = {"channel": "email", "destination": "friend@example.com"}
    first = broker.refer(body, headers=headers)
    second = broker.refer(body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert sandbox.calls()["Refer2"] == 1


def test_idempotency_key_with_another_body_is_409(broker: Broker, sandbox: Sandbox) -> None:
    """Reusing a key with a different body is 409 idempotency_key_reused, nothing sent."""
    headers = {"Idempotency-Key": "k-1"}
    broker.refer({"channel": "sms"}, headers=headers)
    response = broker.refer({"channel": "whatsapp"}, headers=headers)
    assert response.status_code == 409
    assert response.json()["id"] == "idempotency_key_reused"
    assert sandbox.calls()["Refer2"] == 1


def test_idempotency_keys_belong_to_one_customer(broker: Broker, sandbox: Sandbox) -> None:
    """Bob using Alice's key sends his own referral and never sees hers."""
    headers = {"Idempotency-Key": "shared-key"}
    alice = broker.refer({"channel": "sms"}, headers=headers)
    bob = broker.refer({"channel": "sms"}, customer="bob", headers=headers)
    assert bob.status_code == 200 and "idempotent-replayed" not in bob.headers
    assert bob.json()["referral"]["referral_bhid"] != alice.json()["referral"]["referral_bhid"]
    assert sandbox.calls()["Refer2"] == 2


def test_simultaneous_identical_sends_make_one_call(broker: Broker, sandbox: Sandbox) -> None:
    """Two identical keyed requests at the same moment: one upstream call, the same answer."""
    sandbox.fault(delay=0.5, functions=["Refer2"])
    headers = {"Idempotency-Key": "double-click"}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(broker.refer, {"channel": "sms"}, headers=headers) for _ in range(2)]
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200, 200]
    assert responses[0].content == responses[1].content
    assert sandbox.calls()["Refer2"] == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "two words"])
def test_bad_idempotency_key_is_invalid_input(broker: Broker, sandbox: Sandbox, key: str) -> None:
    """An Idempotency-Key outside 1-255 visible ASCII characters is 400 naming the header."""
    response = broker.client.post(
        WRITE_PATH,
        json={"channel": "sms"},
        headers=[
            *((name.encode(), value.encode()) for name, value in broker.auth().items()),
            (b"Idempotency-Key", key.encode()),
        ],
    )
    assert response.status_code == 400
    assert response.json()["field"] == "Idempotency-Key"
    assert sandbox.total_calls() == 0


def test_failed_send_is_replayed_not_resent(broker: Broker, sandbox: Sandbox) -> None:
    """A send that failed after reaching Bubblehouse replays its error instead of sending again."""
    sandbox.fault(status=500, times=1, functions=["Refer2"])
    headers = {"Idempotency-Key": "retry-after-502"}
    first = broker.refer({"channel": "sms"}, headers=headers)
    second = broker.refer({"channel": "sms"}, headers=headers)
    assert first.status_code == second.status_code == 502
    assert second.json()["id"] == "upstream_error"
    assert sandbox.calls()["Refer2"] == 1


def test_send_refused_by_broker_limit_can_be_retried_with_same_key(sandbox: Sandbox) -> None:
    """A key whose request was refused before Bubblehouse (rate limit) is free for a retry."""
    from tests.stack import running_broker

    with running_broker(sandbox.url, BROKER_RATE_LIMIT_WRITE="1/2s") as broker:
        assert broker.refer({"channel": "sms"}).status_code == 200
        limited = broker.refer({"channel": "sms"}, headers={"Idempotency-Key": "k"})
        assert limited.status_code == 429
        assert limited.json()["id"] == "rate_limit_exceeded"
        assert int(limited.headers["retry-after"]) >= 1
        assert sandbox.calls()["Refer2"] == 1


def test_bubblehouse_429_frees_the_idempotency_key(broker: Broker, sandbox: Sandbox) -> None:
    """A send Bubblehouse refused for its rate limit was not processed: the same key may retry."""
    sandbox.fault(rate_limit=True, times=1, functions=["Refer2"])
    headers = {"Idempotency-Key": "limited-once"}
    assert broker.refer({"channel": "sms"}, headers=headers).status_code == 429
    retry = broker.refer({"channel": "sms"}, headers=headers)
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
    assert sandbox.calls()["Refer2"] == 2
