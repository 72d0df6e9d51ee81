"""The sandbox's data: customers, identity rules, referrals and their lifecycle."""

from __future__ import annotations

import re
from typing import Any

import pytest

from broker_dev.sandbox.data import (
    DAY,
    DEFAULT_REWARD_PTS,
    REUSE_WINDOW,
    BubblehouseError,
    Customer,
    Flakes,
    Referral,
    SandboxStore,
    mask_destination,
    monetary,
    rfc3339,
    share_action,
    share_text,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class Clock:
    """The sandbox's clock, set by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def store(*, seed: bool = True, clock: Clock | None = None) -> SandboxStore:
    """A store for shop ``s`` on a hand-set clock."""
    return SandboxStore("s", clock or Clock(), seed=seed)


def refused(exc: pytest.ExceptionInfo[BubblehouseError]) -> tuple[int, str, str]:
    """Status, id and message of a caught BubblehouseError."""
    return exc.value.status, exc.value.error_id, exc.value.message


def statuses(history: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(channel, status) of each row of a history answer, in order."""
    return [(row["channel"], row["status"]) for row in history["referrals"]]


# -- small formats --------------------------------------------------------------------------


def test_an_error_renders_as_id_and_message() -> None:
    """BubblehouseError carries its status and renders {"id", "message"}."""
    error = BubblehouseError(404, "unknown_shop", "No shop.")
    assert (error.status, error.body(), str(error)) == (
        404,
        {"id": "unknown_shop", "message": "No shop."},
        "404 unknown_shop",
    )


def test_times_are_whole_second_rfc3339_utc() -> None:
    """Unix seconds become RFC 3339 in UTC with Z, fractions dropped."""
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(NOW + 0.9) == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize(
    ("millionths", "text"),
    [(42_990_000, "42.990000"), (0, "0.000000"), (5, "0.000005"), (-1_500_000, "-1.500000")],
)
def test_money_is_a_six_decimal_string(millionths: int, text: str) -> None:
    """Millionths are written as Bubblehouse's monetary: six fractional digits, sign first."""
    assert monetary(millionths) == text


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("friend@example.com", "f***@example.com"),
        ("@example.com", "***@example.com"),
        ("+15551234", "+***"),
        ("", "***"),
    ],
)
def test_destinations_keep_only_their_first_character_and_domain(value: str, masked: str) -> None:
    """Masking keeps the first character and, for an email, the domain."""
    assert mask_destination(value) == masked


def test_flakes_are_16_hex_digits_of_milliseconds_then_a_counter() -> None:
    """Ids are 16 hex digits, ordered by time, distinct within one millisecond."""
    flakes = Flakes()
    first, second, later = flakes.at(NOW), flakes.at(NOW), flakes.at(NOW + 0.001)
    assert all(re.fullmatch(r"[0-9a-f]{16}", bhid) for bhid in (first, second, later))
    assert int(first, 16) >> 16 == int(NOW * 1000)
    assert first < second < later


def test_a_customer_answers_its_identity_fields() -> None:
    """Customer.value gives bhid, shopid or email by name."""
    customer = Customer("alice", "00ff", None)
    assert [customer.value(name) for name in ("bhid", "shopid", "email")] == ["00ff", "alice", None]


def test_a_referral_renders_as_referral2() -> None:
    """to_json writes times as RFC 3339, points with their money value and money as text."""
    row = Referral(
        "r1",
        "email",
        "friend@example.com",
        "approved",
        "https://s.example/r/r1",
        NOW,
        acceptance_bhid="a1",
        accepted_at=NOW + DAY,
        reward_pts=500,
        reward_amount=10_000_000,
        coupon_code="THANKS",
    )
    assert row.to_json() == {
        "referral_bhid": "r1",
        "acceptance_bhid": "a1",
        "channel": "email",
        "destination": "friend@example.com",
        "status": "approved",
        "link": "https://s.example/r/r1",
        "sent_at": "2023-11-14T22:13:20Z",
        "accepted_at": "2023-11-15T22:13:20Z",
        "reward_pts": 500,
        "reward_pts_value": "5.000000",
        "reward_amount": "10.000000",
        "coupon_code": "THANKS",
    }
    assert row.to_json(mask=True)["destination"] == "f***@example.com"


def test_an_invited_referral_renders_its_missing_parts_as_null() -> None:
    """No acceptance, reward or destination: those fields are null, masked or not."""
    row = Referral("r1", "whatsapp", None, "invited", "https://s.example/r/r1", NOW)
    rendered = row.to_json(mask=True)
    assert rendered["destination"] is None
    assert [rendered[name] for name in ("acceptance_bhid", "accepted_at", "reward_pts")] == [
        None
    ] * 3
    assert [rendered[name] for name in ("reward_pts_value", "reward_amount", "coupon_code")] == [
        None
    ] * 3


# -- share actions --------------------------------------------------------------------------

LINK = "https://s.example/r/abc"
TEXT = share_text("s", LINK)


def test_the_share_text_names_the_shop_and_the_link() -> None:
    """The text offered with a link names the shop and carries the link."""
    assert share_text("s", LINK) == f"Here is a gift for your first order at s: {LINK}"


def test_email_needs_no_action_and_qr_code_shows_the_link() -> None:
    """Email: Bubblehouse sends it (none); qr-code: show a code whose data is the link."""
    assert share_action("email", LINK, TEXT) == {"type": "none"}
    assert share_action("qr-code", LINK, TEXT) == {
        "type": "show_qr_code",
        "link": LINK,
        "data": LINK,
    }


@pytest.mark.parametrize(
    ("channel", "prefix"),
    [
        ("whatsapp", "https://wa.me/?text=Here%20is%20a%20gift"),
        ("twitter", "https://x.com/intent/tweet?text=Here%20is%20a%20gift"),
        (
            "facebook",
            "https://www.facebook.com/sharer/sharer.php?u=https%3A%2F%2Fs.example%2Fr%2Fabc",
        ),
        ("messenger", "fb-messenger://share/?link=https%3A%2F%2Fs.example%2Fr%2Fabc"),
        ("telegram", "https://t.me/share/url?url=https%3A%2F%2Fs.example%2Fr%2Fabc&text=Here+is"),
        ("threads", "https://www.threads.net/intent/post?text=Here%20is%20a%20gift"),
        ("sms", "sms:?&body=Here%20is%20a%20gift%20for%20your%20first%20order%20at%20s%3A%20https"),
    ],
)
def test_app_channels_open_a_url_carrying_the_link(channel: str, prefix: str) -> None:
    """Channels with a share URL answer open_url with the encoded text or link."""
    action = share_action(channel, LINK, TEXT)
    assert action["type"] == "open_url" and action["link"] == LINK
    assert action["url"].startswith(prefix)


@pytest.mark.parametrize(
    "channel", ["instagram", "custom-personal", "custom-social", "carrier-pigeon"]
)
def test_other_channels_copy_the_link(channel: str) -> None:
    """Channels with nothing to open, known or not, answer copy_link with the text."""
    assert share_action(channel, LINK, TEXT) == {"type": "copy_link", "link": LINK, "text": TEXT}


# -- customers ------------------------------------------------------------------------------


def test_a_seeded_store_knows_alice_and_bob() -> None:
    """Seeding creates alice and bob with their emails and no one else."""
    seeded = store()
    assert sorted(seeded.customers) == ["alice", "bob"]
    assert seeded.customers["alice"].email == "alice@example.com"
    assert seeded.known("bob") is seeded.customers["bob"]
    assert seeded.known("carol") is None and "carol" not in seeded.customers


def test_an_unseeded_store_knows_nobody() -> None:
    """Without seeding there are no customers and new ones start without history."""
    empty = store(seed=False)
    assert empty.customers == {} and empty.referrals == {}
    alice = empty.customer_for_token("alice", None)
    assert empty.history(alice, mask=False)["referrals"] == []


def test_reset_forgets_created_customers_and_reseeds() -> None:
    """reset() drops everyone created since and restores the seeded history."""
    seeded = store()
    seeded.customer_for_token("zoe", None)
    seeded.refer(seeded.customers["alice"], "email", "new@example.com")
    seeded.reset()
    assert sorted(seeded.customers) == ["alice", "bob"]
    assert len(seeded.referrals["alice"]) == 5


def test_a_customer_token_creates_its_customer_once() -> None:
    """The first token of a customer id creates it with the token's email; later ones reuse it."""
    seeded = store()
    zoe = seeded.customer_for_token("zoe", "zoe@example.com")
    assert (zoe.shopid, zoe.email, len(zoe.bhid)) == ("zoe", "zoe@example.com", 16)
    assert seeded.customer_for_token("zoe", "other@example.com") is zoe
    assert zoe.email == "zoe@example.com"


def test_a_token_email_fills_in_a_missing_email_only() -> None:
    """A customer without email gets the token's; an empty token email changes nothing."""
    seeded = store()
    zoe = seeded.sync("zoe", None)
    assert seeded.customer_for_token("zoe", "") is zoe and zoe.email is None
    assert seeded.customer_for_token("zoe", "zoe@example.com").email == "zoe@example.com"


def test_sync_creates_or_updates_a_customer() -> None:
    """sync creates a customer, later changes its email, and keeps it when given none."""
    seeded = store()
    zoe = seeded.sync("zoe", "zoe@example.com")
    assert seeded.known("zoe") is zoe
    assert seeded.sync("zoe", "zoe@new.example") is zoe and zoe.email == "zoe@new.example"
    assert seeded.sync("zoe", None).email == "zoe@new.example"


# -- identity rules -------------------------------------------------------------------------


def test_a_shop_token_finds_customers_by_any_identity_field() -> None:
    """bhid, shopid or email (case-insensitive) names a customer; empty fields are ignored."""
    seeded = store()
    alice = seeded.customers["alice"]
    assert seeded.resolve({"bhid": alice.bhid}) is alice
    assert seeded.resolve({"shopid": "alice", "bhid": ""}) is alice
    assert seeded.resolve({"email": "ALICE@example.com", "shopid": None}) is alice
    assert (
        seeded.resolve({"bhid": alice.bhid, "shopid": "alice", "email": "alice@example.com"})
        is alice
    )


def test_a_numeric_shopid_is_read_as_text() -> None:
    """A shopid given as a JSON number finds the customer with that id."""
    seeded = store()
    numbered = seeded.sync("123", None)
    assert seeded.resolve({"shopid": 123}) is numbered


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (
            None,
            (
                400,
                "missing_customer_identity",
                "A shop token needs a customer input with a bhid, shopid or email.",
            ),
        ),
        (
            "alice",
            (400, "invalid_input", "customer must be an object with bhid, shopid or email."),
        ),
        ({"shopid": True}, (400, "invalid_input", "customer.shopid must be a string.")),
        ({"bhid": 5}, (400, "invalid_input", "customer.bhid must be a string.")),
        ({"email": ["a@b.c"]}, (400, "invalid_input", "customer.email must be a string.")),
        ({}, (404, "empty_customer_identity", "Every field of the customer input is empty.")),
        (
            {"shopid": "", "email": None, "name": "alice"},
            (404, "empty_customer_identity", "Every field of the customer input is empty."),
        ),
        (
            {"shopid": "nobody"},
            (
                404,
                "no_customers_match_customer_identity",
                "No customer matches the customer identity.",
            ),
        ),
        (
            {"shopid": "alice", "email": "bob@example.com"},
            (
                404,
                "customer_identity_partially_mismatches_matched_customer",
                "The customer's email does not match the matched customer.",
            ),
        ),
        (
            {"email": "alice@example.com", "shopid": "bob"},
            (
                404,
                "customer_identity_partially_mismatches_matched_customer",
                "The customer's email does not match the matched customer.",
            ),
        ),
    ],
)
def test_shop_token_identity_refusals(identity: Any, expected: tuple[int, str, str]) -> None:
    """Each malformed, empty, unknown or contradictory identity gets its Bubblehouse error."""
    with pytest.raises(BubblehouseError) as caught:
        store().resolve(identity)
    assert refused(caught) == expected


def test_identity_fields_are_matched_bhid_then_shopid_then_email() -> None:
    """The first field that matches picks the customer; the others are then checked against it."""
    seeded = store()
    with pytest.raises(BubblehouseError) as caught:
        seeded.resolve({"bhid": seeded.customers["bob"].bhid, "shopid": "alice"})
    assert refused(caught)[2] == "The customer's shopid does not match the matched customer."


def test_a_customer_without_email_matches_any_email_given() -> None:
    """An email in the identity is not held against a customer who has none."""
    seeded = store()
    zoe = seeded.sync("zoe", None)
    assert seeded.resolve({"shopid": "zoe", "email": "zoe@example.com"}) is zoe


def test_demo_customers_appear_on_first_mention_in_a_seeded_store() -> None:
    """A shopid starting demo- creates that customer, with the given email and demo history."""
    seeded = store()
    demo = seeded.resolve({"shopid": "demo-7", "email": "d7@example.com"})
    assert (demo.shopid, demo.email) == ("demo-7", "d7@example.com")
    assert seeded.resolve({"shopid": "demo-7"}) is demo
    assert len(seeded.referrals["demo-7"]) == 5


@pytest.mark.parametrize(
    ("seed", "create_demo"), [(True, False), (False, True)], ids=["synced", "unseeded"]
)
def test_demo_customers_need_seeding_and_the_any_mode(seed: bool, create_demo: bool) -> None:
    """Without seeding, or with create_demo off (customers=synced), demo-* ids are unknown."""
    with pytest.raises(BubblehouseError) as caught:
        store(seed=seed).resolve({"shopid": "demo-7"}, create_demo=create_demo)
    assert refused(caught)[1] == "no_customers_match_customer_identity"


def test_a_customer_token_may_name_its_own_customer() -> None:
    """A customer input agreeing with the token's customer (email in any case) passes."""
    seeded = store()
    alice = seeded.customers["alice"]
    seeded.check_token_identity(None, alice)
    seeded.check_token_identity({}, alice)
    seeded.check_token_identity(
        {"bhid": alice.bhid, "shopid": "alice", "email": "Alice@Example.com"}, alice
    )
    seeded.check_token_identity({"email": "any@example.com"}, seeded.sync("zoe", None))


@pytest.mark.parametrize(
    "identity", [{"shopid": "bob"}, {"bhid": "0000000000000000"}, {"email": "bob@example.com"}]
)
def test_a_customer_token_naming_someone_else_is_refused(identity: dict[str, str]) -> None:
    """Any identity field disagreeing with the token's customer is 403."""
    seeded = store()
    with pytest.raises(BubblehouseError) as caught:
        seeded.check_token_identity(identity, seeded.customers["alice"])
    assert refused(caught) == (
        403,
        "customer_identity_does_not_match_token",
        "The customer identity names a different customer than the token.",
    )


def test_a_customer_token_with_a_malformed_identity_is_invalid_input() -> None:
    """The customer input of a customer token is type-checked as for a shop token."""
    seeded = store()
    with pytest.raises(BubblehouseError) as caught:
        seeded.check_token_identity("alice", seeded.customers["alice"])
    assert refused(caught)[:2] == (400, "invalid_input")


# -- history --------------------------------------------------------------------------------


def test_alice_has_a_demo_history_newest_first_with_a_summary() -> None:
    """alice's seeded rows come newest first (acceptance, else sending) with the summary."""
    seeded = store()
    history = seeded.history(seeded.customers["alice"], mask=False)
    assert statuses(history) == [
        ("whatsapp", "invited"),
        ("email", "qualified"),
        ("custom-social", "rejected"),
        ("custom-social", "approved"),
        ("email", "approved"),
    ]
    assert history["summary"] == {"sent": 4, "approved": 2, "rejected": 1, "earned_pts": 500}
    rows = history["referrals"]
    assert rows[1]["destination"] == "carol@example.com"
    assert rows[1]["accepted_at"] == rfc3339(NOW - 2 * DAY)
    assert rows[2]["referral_bhid"] == rows[3]["referral_bhid"]
    assert rows[3]["coupon_code"] == "THANKS-10" and rows[3]["reward_amount"] == "10.000000"
    assert all(row["link"] == f"https://s.example/r/{row['referral_bhid']}" for row in rows)


def test_bob_has_a_rejected_and_an_open_referral() -> None:
    """bob's seeded history: a qr-code share and a rejected email invitation."""
    seeded = store()
    history = seeded.history(seeded.customers["bob"], mask=False)
    assert statuses(history) == [("qr-code", "invited"), ("email", "rejected")]
    assert history["summary"] == {"sent": 2, "approved": 0, "rejected": 1, "earned_pts": 0}


def test_other_customers_start_without_history() -> None:
    """A new customer other than demo-* has no referrals."""
    seeded = store()
    history = seeded.history(seeded.customer_for_token("zoe", None), mask=True)
    assert history == {
        "summary": {"sent": 0, "approved": 0, "rejected": 0, "earned_pts": 0},
        "referrals": [],
    }


def test_history_masks_destinations_when_asked() -> None:
    """mask=True masks every destination; rows without one stay null."""
    seeded = store()
    rows = seeded.history(seeded.customers["alice"], mask=True)["referrals"]
    assert [row["destination"] for row in rows] == [
        None,
        "c***@example.com",
        None,
        None,
        "f***@example.com",
    ]


def test_rows_of_the_same_moment_are_ordered_newest_id_first() -> None:
    """Two referrals sent in the same second: the later one (larger id) comes first."""
    seeded = store(seed=False)
    zoe = seeded.customer_for_token("zoe", None)
    seeded.refer(zoe, "whatsapp", None)
    seeded.refer(zoe, "sms", None)
    assert statuses(seeded.history(zoe, mask=False)) == [
        ("sms", "invited"),
        ("whatsapp", "invited"),
    ]


# -- sending and the reuse window -----------------------------------------------------------


def test_a_referral_starts_invited_with_a_link_and_leads_the_history() -> None:
    """refer() creates an invited row dated now, with its link, first in the history."""
    clock = Clock()
    seeded = store(clock=clock)
    alice = seeded.customers["alice"]
    row, reused = seeded.refer(alice, "email", "new@example.com")
    assert not reused
    assert (row.channel, row.destination, row.status, row.sent_at) == (
        "email",
        "new@example.com",
        "invited",
        NOW,
    )
    assert row.link == seeded.link(row.referral_bhid) == f"https://s.example/r/{row.referral_bhid}"
    history = seeded.history(alice, mask=False)
    assert history["referrals"][0]["referral_bhid"] == row.referral_bhid
    assert history["summary"]["sent"] == 5


def test_the_same_invitation_within_the_window_is_reused() -> None:
    """Same customer, channel and email (any case) within REUSE_WINDOW gets the same row."""
    clock = Clock()
    seeded = store(clock=clock)
    alice = seeded.customers["alice"]
    first, _ = seeded.refer(alice, "email", "New@Example.com")
    clock.now += REUSE_WINDOW - 1
    again, reused = seeded.refer(alice, "email", "new@example.COM")
    assert reused and again is first
    assert len(seeded.referrals["alice"]) == 6


def test_the_reuse_window_ends_after_five_minutes() -> None:
    """At REUSE_WINDOW seconds after sending, the same invitation is a new referral."""
    clock = Clock()
    seeded = store(clock=clock)
    alice = seeded.customers["alice"]
    first, _ = seeded.refer(alice, "email", "new@example.com")
    clock.now += REUSE_WINDOW
    second, reused = seeded.refer(alice, "email", "new@example.com")
    assert not reused and second.referral_bhid != first.referral_bhid
    clock.now += 1
    assert seeded.refer(alice, "email", "new@example.com") == (second, True)


def test_shares_without_destination_are_reused_per_channel() -> None:
    """A link share on one channel is reused for that channel only."""
    seeded = store(seed=False)
    zoe = seeded.customer_for_token("zoe", None)
    whatsapp, _ = seeded.refer(zoe, "whatsapp", None)
    assert seeded.refer(zoe, "whatsapp", None) == (whatsapp, True)
    sms, reused = seeded.refer(zoe, "sms", None)
    assert not reused and sms is not whatsapp


def test_another_destination_or_customer_is_a_new_referral() -> None:
    """The reuse rule needs the same destination and the same customer."""
    seeded = store()
    alice, bob = seeded.customers["alice"], seeded.customers["bob"]
    first, _ = seeded.refer(alice, "email", "one@example.com")
    other, reused = seeded.refer(alice, "email", "two@example.com")
    assert not reused and other is not first
    bobs, reused = seeded.refer(bob, "email", "one@example.com")
    assert not reused and bobs is not first


def test_an_accepted_referral_is_not_reused() -> None:
    """Once a referral has moved past invited, the same invitation makes a new one."""
    seeded = store()
    alice = seeded.customers["alice"]
    first, _ = seeded.refer(alice, "email", "new@example.com")
    seeded.change_status(first.referral_bhid, "qualified")
    second, reused = seeded.refer(alice, "email", "new@example.com")
    assert not reused and second is not first


# -- the lifecycle --------------------------------------------------------------------------


def test_an_invited_referral_is_accepted_when_it_moves_on() -> None:
    """Moving an invited row gives it an acceptance id and time (now) and the new status."""
    clock = Clock()
    seeded = store(clock=clock)
    row, _ = seeded.refer(seeded.customers["bob"], "email", "new@example.com")
    clock.now += 60
    shopid, moved = seeded.change_status(row.referral_bhid, "qualified")
    assert (shopid, moved) == ("bob", row)
    assert (row.status, row.accepted_at, row.reward_pts) == ("qualified", NOW + 60, None)
    assert row.acceptance_bhid is not None and row.acceptance_bhid > row.referral_bhid


def test_a_later_move_keeps_the_acceptance_and_an_approval_earns_the_default_reward() -> None:
    """qualified then approved: same acceptance, DEFAULT_REWARD_PTS when no reward is named."""
    clock = Clock()
    seeded = store(clock=clock)
    row, _ = seeded.refer(seeded.customers["alice"], "email", "new@example.com")
    seeded.change_status(row.referral_bhid, "qualified")
    acceptance = row.acceptance_bhid
    clock.now += 60
    seeded.change_status(row.referral_bhid, "approved")
    assert (row.status, row.acceptance_bhid, row.accepted_at) == ("approved", acceptance, NOW)
    assert row.reward_pts == DEFAULT_REWARD_PTS
    summary = seeded.history(seeded.customers["alice"], mask=False)["summary"]
    assert summary["approved"] == 3 and summary["earned_pts"] == 500 + DEFAULT_REWARD_PTS


def test_an_approval_with_a_reward_earns_that_reward() -> None:
    """reward_pts given with an approval replaces any earlier reward."""
    seeded = store()
    row, _ = seeded.refer(seeded.customers["alice"], "email", "new@example.com")
    seeded.change_status(row.referral_bhid, "approved", 120)
    assert row.reward_pts == 120
    seeded.change_status(row.referral_bhid, "approved", 80)
    assert row.reward_pts == 80


def test_an_approval_without_reward_keeps_an_earlier_one() -> None:
    """Re-approving a rewarded row, in points or in money, adds no default points."""
    seeded = store()
    friend = seeded.history(seeded.customers["alice"], mask=False)["referrals"][4]
    _, row = seeded.change_status(friend["referral_bhid"], "approved")
    assert row.reward_pts == 500
    coupon = Referral(
        "c1", "custom-social", None, "qualified", "l", NOW, "a1", NOW, reward_amount=5
    )
    seeded.referrals["bob"].append(coupon)
    seeded.change_status("c1", "approved")
    assert (coupon.status, coupon.reward_pts, coupon.reward_amount) == ("approved", None, 5)


def test_a_rejection_earns_nothing() -> None:
    """Rejecting an invited referral accepts and rejects it, with no reward."""
    seeded = store()
    row, _ = seeded.refer(seeded.customers["alice"], "sms", None)
    seeded.change_status(row.referral_bhid, "rejected", 99)
    assert (row.status, row.reward_pts) == ("rejected", None)
    assert row.acceptance_bhid is not None


def test_a_referral_accepted_twice_moves_on_its_newest_acceptance() -> None:
    """With several acceptances of one referral, the newest is the one that changes."""
    seeded = store()
    rows = seeded.referrals["alice"]
    older, newer = (row for row in rows if row.channel == "custom-social")
    _, moved = seeded.change_status(older.referral_bhid, "qualified")
    assert moved is newer and newer.status == "qualified"
    assert older.status == "approved"


def test_moving_to_an_unknown_status_is_refused() -> None:
    """Only qualified, approved and rejected are statuses a referral moves to."""
    seeded = store()
    bhid = seeded.referrals["alice"][0].referral_bhid
    with pytest.raises(ValueError, match=r"^status must be one of qualified, approved, rejected$"):
        seeded.change_status(bhid, "invited")


def test_moving_an_unknown_referral_is_a_key_error() -> None:
    """No row with that id: KeyError naming it."""
    with pytest.raises(KeyError, match="nope"):
        store().change_status("nope", "approved")
