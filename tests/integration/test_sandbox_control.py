"""The sandbox's day-one rules and control API, through real HTTP (alone and behind the broker)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from broker.config.settings import ConfigError
from broker.rules.tokens import TokenMinter
from broker_dev.sandbox import create_sandbox_app
from broker_dev.sandbox.config import Rules, SandboxConfig, sandbox_config_from_env
from tests.servers import serve_app
from tests.stack import READ_PATH, WRITE_PATH, running_broker
from tests.support import ISSUER_KEY, SHOP, broker_env, make_settings

REFUSAL = {
    "status": 403,
    "id": "referral_not_eligible",
    "message": "Referrals open after your first order — see you soon!",
}


class Clock:
    """A sandbox clock that moves only when told (rate-limit seconds are then exact)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Bubblehouse:
    """A sandbox server and a client speaking to it as the broker would, plus its controls."""

    def __init__(self, url: str, clock: Clock) -> None:
        self.url = url
        self.clock = clock
        self.minter = TokenMinter(make_settings())
        self.client = httpx2.Client(base_url=url, timeout=10)

    def call(
        self, function: str, body: dict[str, Any], customer: str = "alice", email: str | None = None
    ) -> httpx2.Response:
        token = self.minter.customer_token(customer, email).token
        path = READ_PATH if function == "CustomerReferrals2" else WRITE_PATH
        return self.client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

    def read(self, customer: str = "alice", email: str | None = None) -> httpx2.Response:
        return self.call("CustomerReferrals2", {}, customer, email)

    def refer(self, customer: str = "alice", channel: str = "whatsapp") -> httpx2.Response:
        return self.call("Refer2", {"channel": channel}, customer)

    def settings(self, **changes: Any) -> httpx2.Response:
        return self.client.put("/_sandbox/settings", json=changes)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Clock]]:
    """One sandbox with a hand-driven clock for the module."""
    clock = Clock()
    settings = make_settings()
    config = SandboxConfig(
        shop=SHOP, keys={key.kid: key.secret.reveal() for key in settings.first_shop.signing_keys}
    )
    with serve_app(create_sandbox_app(config, clock=clock)) as running:
        yield running.url, clock


@pytest.fixture
def bh(server: tuple[str, Clock]) -> Iterator[Bubblehouse]:
    """The module's sandbox, reset (rules included) for this test."""
    url, clock = server
    clock.now += 10
    control = Bubblehouse(url, clock)
    control.client.post("/_sandbox/reset").raise_for_status()
    yield control
    control.client.close()


# --- customers Bubblehouse does not know yet -----------------------------------------------


def test_synced_mode_refuses_unknown_customers_until_synced(bh: Bubblehouse) -> None:
    """customers=synced: 404 no_customers_match_customer_identity until the platform syncs."""
    assert bh.settings(customers="synced").json()["customers"] == "synced"
    unknown = bh.read("zoe")
    assert unknown.status_code == 404
    assert unknown.json()["id"] == "no_customers_match_customer_identity"
    assert bh.refer("zoe").json()["id"] == "no_customers_match_customer_identity"
    assert bh.read("alice").status_code == 200  # seeded customers are known
    synced = bh.client.post("/_sandbox/customers", json={"shopid": "zoe", "email": "z@example.com"})
    assert synced.status_code == 200 and synced.json()["shopid"] == "zoe"
    assert bh.read("zoe").status_code == 200


def test_any_mode_is_the_default(bh: Bubblehouse) -> None:
    """By default any customer token's customer exists from first use (the old behaviour)."""
    assert bh.client.get("/_sandbox/settings").json()["customers"] == "any"
    assert bh.read("zoe").status_code == 200


# --- an email that disagrees with Bubblehouse's record -------------------------------------


def test_check_email_refuses_a_disagreeing_ce(bh: Bubblehouse) -> None:
    """check_email: a ce other than the record's is 404 partially_mismatches; case is ignored."""
    bh.settings(check_email=True)
    mismatch = bh.read("alice", "someone-else@example.com")
    assert mismatch.status_code == 404
    assert mismatch.json()["id"] == "customer_identity_partially_mismatches_matched_customer"
    assert bh.read("alice", "ALICE@example.com").status_code == 200
    assert bh.read("alice").status_code == 200  # no ce, nothing to disagree with


def test_without_check_email_a_disagreeing_ce_passes(bh: Bubblehouse) -> None:
    """The check is off by default."""
    assert bh.read("alice", "someone-else@example.com").status_code == 200


# --- Bubblehouse-like rate limits ----------------------------------------------------------


def test_per_customer_per_second_limits(bh: Bubblehouse) -> None:
    """Reads and writes are counted apart, per customer, per second; 429 has Retry-After."""
    bh.settings(rate_limit_read=2, rate_limit_write=1)
    assert [bh.read().status_code for _ in range(2)] == [200, 200]
    limited = bh.read()
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert limited.json() == {
        "id": "rate_limit_exceeded",
        "message": "You are over the read limit per second for this customer",
    }
    assert bh.read("bob").status_code == 200  # another customer has their own count
    assert bh.refer().status_code == 200  # writes have their own limit
    assert bh.refer().json()["message"].startswith("You are over the write limit")
    bh.clock.now += 1
    assert bh.read().status_code == 200


# --- eligibility refusals in the shop's words ----------------------------------------------


def test_refer_refusal_carries_the_shop_text(bh: Bubblehouse) -> None:
    """refer_refusal: Refer2 answers that status with {"id", "message"} in the shop's words."""
    assert bh.settings(refer_refusal=REFUSAL).json()["refer_refusal"] == REFUSAL
    refused = bh.refer()
    assert refused.status_code == 403
    assert refused.json() == {"id": REFUSAL["id"], "message": REFUSAL["message"]}
    assert bh.read().status_code == 200  # reads are not refused
    bh.settings(refer_refusal=None)
    assert bh.refer().status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"customers": "some"},
        {"check_email": "yes"},
        {"rate_limit_read": -1},
        {"rate_limit_write": True},
        {"refer_refusal": {"status": 500, "message": "x"}},
        {"refer_refusal": {"status": 429, "message": "x"}},
        {"refer_refusal": {"status": 403}},
        {"refer_refusal": {"status": 403, "id": "Not A Slug", "message": "x"}},
        {"unknown": 1},
        [],
    ],
)
def test_bad_settings_are_refused(bh: Bubblehouse, body: Any) -> None:
    """PUT /_sandbox/settings refuses a malformed change with 400 invalid_settings."""
    answer = bh.client.put("/_sandbox/settings", json=body)
    assert answer.status_code == 400 and answer.json()["id"] == "invalid_settings"


def test_reset_restores_the_started_rules(bh: Bubblehouse) -> None:
    """POST /_sandbox/reset puts the rules back to the ones the sandbox started with."""
    bh.settings(customers="synced", check_email=True, rate_limit_read=1, refer_refusal=REFUSAL)
    bh.client.post("/_sandbox/reset").raise_for_status()
    assert bh.client.get("/_sandbox/settings").json() == Rules().to_json()


# --- a referral's life -----------------------------------------------------------------------


def row(bh: Bubblehouse, bhid: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [
        r for r in bh.read().json()["referrals"] if r["referral_bhid"] == bhid
    ]
    assert len(rows) == 1
    return rows[0]


def test_a_referral_is_qualified_then_approved(bh: Bubblehouse) -> None:
    """The control endpoint moves a referral invited -> qualified -> approved, with a reward."""
    bhid = bh.refer().json()["referral"]["referral_bhid"]
    assert row(bh, bhid)["status"] == "invited" and row(bh, bhid)["acceptance_bhid"] is None
    moved = bh.client.post(f"/_sandbox/referrals/{bhid}", json={"status": "qualified"})
    assert moved.status_code == 200 and moved.json()["customer"] == "alice"
    qualified = row(bh, bhid)
    assert qualified["status"] == "qualified"
    assert qualified["acceptance_bhid"] and qualified["accepted_at"]
    bh.client.post(f"/_sandbox/referrals/{bhid}", json={"status": "approved"})
    approved = row(bh, bhid)
    assert approved["status"] == "approved" and approved["reward_pts"] == 500
    assert approved["acceptance_bhid"] == qualified["acceptance_bhid"]


def test_a_referral_can_be_rejected_with_no_reward(bh: Bubblehouse) -> None:
    """A rejection is final and earns nothing."""
    bhid = bh.refer(channel="sms").json()["referral"]["referral_bhid"]
    bh.client.post(f"/_sandbox/referrals/{bhid}", json={"status": "rejected"})
    rejected = row(bh, bhid)
    assert rejected["status"] == "rejected" and rejected["reward_pts"] is None


def test_moving_an_unknown_or_badly_named_referral_is_refused(bh: Bubblehouse) -> None:
    """404 unknown_referral for no such id; 400 invalid_status for a status it cannot take."""
    missing = bh.client.post("/_sandbox/referrals/nope", json={"status": "approved"})
    assert missing.status_code == 404 and missing.json()["id"] == "unknown_referral"
    bhid = bh.refer().json()["referral"]["referral_bhid"]
    for status in ("invited", "expired", "", None):
        bad = bh.client.post(f"/_sandbox/referrals/{bhid}", json={"status": status})
        assert bad.status_code == 400 and bad.json()["id"] == "invalid_status"


def test_syncing_a_customer_needs_a_shopid(bh: Bubblehouse) -> None:
    """POST /_sandbox/customers refuses a missing or slashed shopid."""
    for body in ({}, {"shopid": ""}, {"shopid": "a/b"}, {"shopid": "x", "email": 3}):
        answer = bh.client.post("/_sandbox/customers", json=body)
        assert answer.status_code == 400 and answer.json()["id"] == "invalid_customer"


# --- configuration from the environment ----------------------------------------------------


def test_rules_from_the_environment() -> None:
    """SANDBOX_CUSTOMERS, SANDBOX_CHECK_EMAIL and SANDBOX_RATE_LIMIT_* set the starting rules."""
    env = broker_env(
        SANDBOX_CUSTOMERS="synced",
        SANDBOX_CHECK_EMAIL="yes",
        SANDBOX_RATE_LIMIT_READ="5",
        SANDBOX_RATE_LIMIT_WRITE="1",
    )
    rules = sandbox_config_from_env(env).rules
    assert rules == Rules(
        customers="synced", check_email=True, rate_limit_read=5, rate_limit_write=1
    )


def test_bad_rules_in_the_environment_name_the_variable() -> None:
    """Each bad variable is one problem naming it."""
    env = broker_env(SANDBOX_CUSTOMERS="all", SANDBOX_RATE_LIMIT_READ="fast")
    with pytest.raises(ConfigError) as caught:
        sandbox_config_from_env(env)
    text = "\n".join(caught.value.problems)
    assert "SANDBOX_CUSTOMERS" in text and "SANDBOX_RATE_LIMIT_READ" in text


# --- what a storefront sees through the broker ---------------------------------------------


@pytest.fixture
def through_broker(bh: Bubblehouse) -> Iterator[Any]:
    """A broker (in-process store) in front of the module's sandbox."""
    with running_broker(bh.url) as broker:
        yield broker


def test_broker_passes_day_one_refusals_on(bh: Bubblehouse, through_broker: Any) -> None:
    """Unknown customer, identity mismatch and eligibility refusal keep Bubblehouse's id/status."""
    bh.settings(customers="synced")
    unknown = through_broker.read("zoe")
    assert unknown.status_code == 404
    assert unknown.json()["id"] == "no_customers_match_customer_identity"
    bh.settings(customers="any", check_email=True)
    token = TokenMinter(through_broker.settings).customer_token("bob", "x@example.com").token
    mismatch = through_broker.client.post(READ_PATH, headers={"Authorization": f"Bearer {token}"})
    assert mismatch.status_code == 404
    assert mismatch.json()["id"] == "customer_identity_partially_mismatches_matched_customer"
    bh.settings(refer_refusal=REFUSAL)
    refused = through_broker.refer({"channel": "whatsapp"})
    assert refused.status_code == 403 and refused.json()["id"] == REFUSAL["id"]


def test_broker_turns_the_limit_into_its_429(bh: Bubblehouse, through_broker: Any) -> None:
    """Bubblehouse's per-second 429 reaches the storefront as rate_limit_exceeded + Retry-After."""
    bh.settings(rate_limit_write=1)
    assert through_broker.refer({"channel": "whatsapp"}).status_code == 200
    limited = through_broker.refer({"channel": "sms"})
    assert limited.status_code == 429
    assert limited.json()["id"] == "rate_limit_exceeded" and "Retry-After" in limited.headers


def test_status_change_reaches_the_shopper_after_invalidation(
    bh: Bubblehouse, through_broker: Any
) -> None:
    """An approval made at Bubblehouse shows once the merchant calls POST /invalidations."""
    sent = through_broker.refer({"channel": "whatsapp"}).json()["referral"]["referral_bhid"]

    def status() -> tuple[str, str]:
        answer = through_broker.read()
        rows = [r for r in answer.json()["referrals"] if r["referral_bhid"] == sent]
        return rows[0]["status"], answer.headers["Cache-Status"]

    assert status()[0] == "invited"
    bh.client.post(f"/_sandbox/referrals/{sent}", json={"status": "approved"})
    cached, cache_status = status()
    assert cached == "invited" and "hit" in cache_status
    dropped = through_broker.client.post(
        "/invalidations",
        json={"customer_id": "alice"},
        headers={"Authorization": f"Bearer {ISSUER_KEY}"},
    )
    assert dropped.status_code == 204
    assert status()[0] == "approved"


def test_synced_mode_applies_to_shop_tokens_too(bh: Bubblehouse) -> None:
    """With a shop token, synced mode invents no demo-* customer: 404 until synced."""
    token = bh.minter.shop_token()
    headers = {"Authorization": f"Bearer {token}"}
    body = {"customer": {"shopid": "demo-zoe"}}
    assert bh.client.post(READ_PATH, json=body, headers=headers).status_code == 200
    bh.client.post("/_sandbox/reset").raise_for_status()
    bh.settings(customers="synced")
    unknown = bh.client.post(READ_PATH, json=body, headers=headers)
    assert unknown.status_code == 404
    assert unknown.json()["id"] == "no_customers_match_customer_identity"
