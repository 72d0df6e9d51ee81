"""The broker against a strict Bubblehouse look-alike that knows none of the sandbox's guesses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.servers import serve_app
from tests.stack import Broker, running_broker
from tests.strict_bubblehouse import StrictBubblehouse
from tests.support import SHOP, make_settings

HISTORY: list[dict[str, Any]] = [
    {
        "referral_bhid": "0000018abc123def",
        "acceptance_bhid": "0000018abc123e00",
        "channel": "email",
        "destination": "fr****@example.com",
        "status": "approved",
        "link": "https://test-shop.example/ref/0000018abc123def",
        "sent_at": "2026-10-01T09:00:00Z",
        "accepted_at": "2026-10-03T12:30:00Z",
        "reward_pts": 250,
        "reward_pts_value": "2.500000",
        "reward_amount": None,
        "coupon_code": None,
    },
    {
        "referral_bhid": "0000018abc0000aa",
        "acceptance_bhid": None,
        "channel": "a-channel-nobody-documented",
        "destination": None,
        "status": "a-status-from-the-future",
        "link": "https://test-shop.example/ref/0000018abc0000aa",
        "sent_at": "2026-11-01T09:00:00Z",
    },
]


@pytest.fixture
def strict() -> StrictBubblehouse:
    """A strict upstream that knows alice (with her email) and nobody else."""
    settings = make_settings()
    upstream = StrictBubblehouse(
        SHOP, {k.kid: k.secret.reveal() for k in settings.first_shop.signing_keys}
    )
    upstream.sync("alice", "alice@example.com")
    upstream.referrals["alice"] = list(HISTORY)
    return upstream


@pytest.fixture
def broker(strict: StrictBubblehouse) -> Iterator[Broker]:
    """A broker (in-process store) in front of the strict upstream, both real servers."""
    # No per-customer back-off: these tests change Bubblehouse's mind between two reads.
    with (
        serve_app(strict.app()) as upstream,
        running_broker(upstream.url, BROKER_UPSTREAM_BACKOFF="0") as running,
    ):
        yield running


def test_history_passes_through_byte_for_byte(broker: Broker, strict: StrictBubblehouse) -> None:
    """No summary, an unknown member, old order, unknown channel and status: all unchanged."""
    strict.extra_members["referral_stats"] = {"sent": 2, "whatever": [1, 2]}
    answer = broker.read()
    assert answer.status_code == 200, answer.text
    expected = {"referrals": HISTORY, "referral_stats": {"sent": 2, "whatever": [1, 2]}}
    assert answer.content == orjson.dumps(expected)


def test_unknown_customer_keeps_bubblehouses_id(broker: Broker, strict: StrictBubblehouse) -> None:
    """A customer the platform has not synced: 404 no_customers_match_customer_identity."""
    answer = broker.read("zoe")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["id"] == "no_customers_match_customer_identity"
    strict.sync("zoe")
    assert broker.read("zoe").json() == {"referrals": []}


def test_email_disagreeing_with_the_record(broker: Broker) -> None:
    """A token email other than Bubblehouse's record: 404 partially_mismatches passes on."""
    token = broker.token("alice", "not-alice@example.com")
    answer = broker.client.post(
        f"/api/v2023061/{SHOP}/CustomerReferrals2",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 404
    assert answer.json()["id"] == "customer_identity_partially_mismatches_matched_customer"


def test_eligibility_refusal_with_shop_text(broker: Broker, strict: StrictBubblehouse) -> None:
    """An undocumented refusal id keeps its status and id; the broker's message is its own."""
    shop_text = "Invite friends once your first order has shipped."
    strict.refusal = (422, {"id": "referrer_not_eligible", "message": shop_text})
    answer = broker.refer({"channel": "email", "destination": "friend@example.com"})
    assert answer.status_code == 422
    body = answer.json()
    assert body["id"] == "referrer_not_eligible"
    assert body["message"] != shop_text and body["upstream_status"] == 422
    assert "friend@example.com" not in answer.text


def test_unfamiliar_share_action_passes_through(broker: Broker, strict: StrictBubblehouse) -> None:
    """A share_action shape the sandbox never makes reaches the storefront unchanged."""
    strict.share_action = {"kind": "navigate", "target": {"href": "https://x.example/s"}, "n": 1}
    answer = broker.refer({"channel": "whatsapp"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["share_action"] == strict.share_action
    assert "summary" not in answer.json()


def test_refer2_without_share_action_passes_through(broker: Broker) -> None:
    """share_action is optional: an answer without it is still a success, unchanged."""
    answer = broker.refer({"channel": "sms"})
    assert answer.status_code == 200
    assert set(answer.json()) == {"referral"}


def test_only_documented_input_goes_upstream(broker: Broker, strict: StrictBubblehouse) -> None:
    """Refer2 sends channel and destination; identity and sender stay with the broker."""
    body = {
        "channel": "email",
        "destination": "josé@exämple.com",
        "sender": "alice@example.com",
        "customer": {"shopid": "alice"},
    }
    assert broker.refer(body).status_code == 200
    sent = [seen for seen in strict.seen if seen["function"] == "Refer2"][-1]
    assert sent["body"] == {"channel": "email", "destination": "josé@exämple.com"}
    assert sent["claims"]["sub"] == f"{SHOP}/alice"


def test_bubblehouse_429_without_retry_after(broker: Broker, strict: StrictBubblehouse) -> None:
    """Bubblehouse documents no Retry-After: the broker still gives the browser one."""
    strict.limited = 1
    answer = broker.read()
    assert answer.status_code == 429
    assert answer.json()["id"] == "rate_limit_exceeded"
    assert int(answer.headers["Retry-After"]) >= 1
