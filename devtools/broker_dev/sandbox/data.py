"""The sandbox's in-memory Bubblehouse data: customers, referrals, identity rules, share actions.

Plain Python, no web framework: :mod:`broker_dev.sandbox` turns :class:`BubblehouseError` into
Bubblehouse's ``{"id": ..., "message": ...}`` answers and these dicts into JSON.

Referrals are kept in the newest ``Referral2`` shape (bubblehouse-api.md 3.2). Times are stored
as Unix seconds and written as RFC 3339 UTC with ``Z``; money is stored in millionths and written
as a decimal string with six fractional digits, as Bubblehouse documents ``monetary``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

CHANNEL_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
MAX_EMAIL = 254
REUSE_WINDOW = 300.0
POINT_VALUE = 10_000  # one point is worth 0.01 of the shop currency, in millionths
DAY = 86_400.0
IDENTITY_FIELDS = ("bhid", "shopid", "email")
# ReferralStatus3 values a referral can move to (bubblehouse-api.md 3.3; expired is reserved).
LATER_STATUSES = ("qualified", "approved", "rejected")
DEFAULT_REWARD_PTS = 500  # the sandbox's reward for an approval that names none


class BubblehouseError(Exception):
    """An answer Bubblehouse gives as ``{"id": ..., "message": ...}`` with an HTTP status."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        self.status = status
        self.error_id = error_id
        self.message = message
        super().__init__(f"{status} {error_id}")

    def body(self) -> dict[str, str]:
        return {"id": self.error_id, "message": self.message}


def rfc3339(timestamp: float) -> str:
    """Unix seconds as RFC 3339 UTC, whole seconds, with ``Z``."""
    return datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def monetary(millionths: int) -> str:
    """Bubblehouse's output form of money: ``"42.990000"``."""
    sign = "-" if millionths < 0 else ""
    whole, fraction = divmod(abs(millionths), 1_000_000)
    return f"{sign}{whole}.{fraction:06d}"


def mask_destination(value: str) -> str:
    """``friend@example.com`` → ``f***@example.com``; anything else keeps its first character."""
    local, at, domain = value.partition("@")
    return f"{local[:1]}***{at}{domain}"


class Flakes:
    """Bubbleflake-like ids: 16 hex digits, milliseconds then a counter, so time-ordered."""

    def __init__(self) -> None:
        self._counter = 0

    def at(self, timestamp: float) -> str:
        self._counter = (self._counter + 1) & 0xFFFF
        return f"{(int(timestamp * 1000) << 16) | self._counter:016x}"


@dataclass
class Customer:
    shopid: str
    bhid: str
    email: str | None = None

    def value(self, name: str) -> str | None:
        return {"bhid": self.bhid, "shopid": self.shopid, "email": self.email}[name]


@dataclass
class Referral:
    referral_bhid: str
    channel: str
    destination: str | None
    status: str
    link: str
    sent_at: float
    acceptance_bhid: str | None = None
    accepted_at: float | None = None
    reward_pts: int | None = None
    reward_amount: int | None = None  # millionths
    coupon_code: str | None = None

    @property
    def newest_at(self) -> float:
        return self.accepted_at if self.accepted_at is not None else self.sent_at

    def to_json(self, *, mask: bool = False) -> dict[str, Any]:
        destination = self.destination
        if destination is not None and mask:
            destination = mask_destination(destination)
        return {
            "referral_bhid": self.referral_bhid,
            "acceptance_bhid": self.acceptance_bhid,
            "channel": self.channel,
            "destination": destination,
            "status": self.status,
            "link": self.link,
            "sent_at": rfc3339(self.sent_at),
            "accepted_at": None if self.accepted_at is None else rfc3339(self.accepted_at),
            "reward_pts": self.reward_pts,
            "reward_pts_value": (
                None if self.reward_pts is None else monetary(self.reward_pts * POINT_VALUE)
            ),
            "reward_amount": None if self.reward_amount is None else monetary(self.reward_amount),
            "coupon_code": self.coupon_code,
        }


def share_text(shop: str, link: str) -> str:
    return f"Here is a gift for your first order at {shop}: {link}"


def share_action(channel: str, link: str, text: str) -> dict[str, str]:
    """What the caller does next to finish sharing on ``channel`` (ReferralShareAction1)."""
    if channel == "email":
        # Bubblehouse sends the invitation email itself.
        return {"type": "none"}
    if channel == "qr-code":
        return {"type": "show_qr_code", "link": link, "data": link}
    urls = {
        "whatsapp": "https://wa.me/?" + urlencode({"text": text}, quote_via=quote),
        "twitter": "https://x.com/intent/tweet?" + urlencode({"text": text}, quote_via=quote),
        "facebook": "https://www.facebook.com/sharer/sharer.php?" + urlencode({"u": link}),
        "messenger": "fb-messenger://share/?" + urlencode({"link": link}),
        "telegram": "https://t.me/share/url?" + urlencode({"url": link, "text": text}),
        "threads": "https://www.threads.net/intent/post?"
        + urlencode({"text": text}, quote_via=quote),
        "sms": "sms:?&body=" + quote(text, safe=""),
    }
    if channel in urls:
        return {"type": "open_url", "url": urls[channel], "link": link}
    # instagram, custom-personal, custom-social and channels this sandbox has never heard of:
    # nothing to open, the person pastes the link wherever they like.
    return {"type": "copy_link", "link": link, "text": text}


def _identity_fields(identity: object) -> dict[str, str]:
    """The non-empty fields of a CustomerIdentity1 input."""
    if not isinstance(identity, dict):
        raise BubblehouseError(
            400, "invalid_input", "customer must be an object with bhid, shopid or email."
        )
    fields: dict[str, str] = {}
    for name in IDENTITY_FIELDS:
        value = identity.get(name)
        if value is None or value == "":
            continue
        if isinstance(value, int) and not isinstance(value, bool) and name == "shopid":
            value = str(value)
        if not isinstance(value, str):
            raise BubblehouseError(400, "invalid_input", f"customer.{name} must be a string.")
        fields[name] = value
    return fields


def _same(name: str, given: str, known: str) -> bool:
    return given.casefold() == known.casefold() if name == "email" else given == known


@dataclass
class SandboxStore:
    """Customers and their referrals for one sandbox app instance."""

    shop: str
    clock: Callable[[], float]
    seed: bool = True
    flakes: Flakes = field(default_factory=Flakes)
    customers: dict[str, Customer] = field(default_factory=dict)
    referrals: dict[str, list[Referral]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.customers.clear()
        self.referrals.clear()
        if self.seed:
            self._create("alice", "alice@example.com")
            self._create("bob", "bob@example.com")

    # -- customers -------------------------------------------------------------------------

    def _create(self, shopid: str, email: str | None) -> Customer:
        customer = Customer(shopid, self.flakes.at(self.clock()), email)
        self.customers[shopid] = customer
        self.referrals[shopid] = self._seed_rows(shopid) if self.seed else []
        return customer

    def customer_for_token(self, shopid: str, email: str | None) -> Customer:
        """The customer of a customer token, created on first use (any id is known)."""
        customer = self.customers.get(shopid)
        if customer is None:
            return self._create(shopid, email)
        if customer.email is None and email:
            customer.email = email
        return customer

    def known(self, shopid: str) -> Customer | None:
        """The customer with this shop id, if Bubblehouse has heard of them (no creation)."""
        return self.customers.get(shopid)

    def sync(self, shopid: str, email: str | None) -> Customer:
        """What the shop's platform integration does: create or update one customer."""
        customer = self.customers.get(shopid)
        if customer is None:
            return self._create(shopid, email)
        if email is not None:
            customer.email = email
        return customer

    def check_token_identity(self, identity: object, customer: Customer) -> None:
        """A ``customer`` input sent with a customer token must not name anyone else."""
        if identity is None:
            return
        for name, given in _identity_fields(identity).items():
            known = customer.value(name)
            if known is not None and not _same(name, given, known):
                raise BubblehouseError(
                    403,
                    "customer_identity_does_not_match_token",
                    "The customer identity names a different customer than the token.",
                )

    def resolve(self, identity: object, *, create_demo: bool = True) -> Customer:
        """The customer a shop token's ``customer`` input names (CustomerIdentity1 rules).

        ``create_demo`` lets a seeded sandbox invent ``demo-*`` customers on first mention.
        """
        if identity is None:
            raise BubblehouseError(
                400,
                "missing_customer_identity",
                "A shop token needs a customer input with a bhid, shopid or email.",
            )
        fields = _identity_fields(identity)
        if not fields:
            raise BubblehouseError(
                404, "empty_customer_identity", "Every field of the customer input is empty."
            )
        matched = self._find(fields, create_demo)
        if matched is None:
            raise BubblehouseError(
                404,
                "no_customers_match_customer_identity",
                "No customer matches the customer identity.",
            )
        for name, given in fields.items():
            known = matched.value(name)
            if known is not None and not _same(name, given, known):
                raise BubblehouseError(
                    404,
                    "customer_identity_partially_mismatches_matched_customer",
                    f"The customer's {name} does not match the matched customer.",
                )
        return matched

    def _find(self, fields: dict[str, str], create_demo: bool) -> Customer | None:
        for name in IDENTITY_FIELDS:
            if name not in fields:
                continue
            for customer in self.customers.values():
                known = customer.value(name)
                if known is not None and _same(name, fields[name], known):
                    return customer
        shopid = fields.get("shopid")
        if create_demo and self.seed and shopid is not None and shopid.startswith("demo-"):
            return self._create(shopid, fields.get("email"))
        return None

    # -- referrals -------------------------------------------------------------------------

    def history(self, customer: Customer, *, mask: bool) -> dict[str, Any]:
        """CustomerReferrals2's answer: the summary (the sandbox's guess) and rows, newest first."""
        rows = sorted(
            self.referrals.get(customer.shopid, []),
            key=lambda r: (r.newest_at, r.acceptance_bhid or r.referral_bhid),
            reverse=True,
        )
        summary = {
            "sent": len({r.referral_bhid for r in rows}),
            "approved": sum(1 for r in rows if r.status == "approved"),
            "rejected": sum(1 for r in rows if r.status == "rejected"),
            "earned_pts": sum(r.reward_pts or 0 for r in rows if r.status == "approved"),
        }
        return {"summary": summary, "referrals": [r.to_json(mask=mask) for r in rows]}

    def link(self, referral_bhid: str) -> str:
        return f"https://{self.shop}.example/r/{referral_bhid}"

    def refer(
        self, customer: Customer, channel: str, destination: str | None
    ) -> tuple[Referral, bool]:
        """Create a referral, or reuse one sent on the same channel to the same place recently."""
        now = self.clock()
        rows = self.referrals.setdefault(customer.shopid, [])
        wanted = None if destination is None else destination.casefold()
        for row in reversed(rows):
            same_place = (row.destination or "").casefold() == (wanted or "")
            if (
                row.channel == channel
                and same_place
                and row.status == "invited"
                and now - row.sent_at < REUSE_WINDOW
            ):
                return row, True
        bhid = self.flakes.at(now)
        row = Referral(bhid, channel, destination, "invited", self.link(bhid), now)
        rows.append(row)
        return row, False

    def change_status(
        self, referral_bhid: str, status: str, reward_pts: int | None = None
    ) -> tuple[str, Referral]:
        """Move a referral on, as time and the shop would: (its customer's shop id, the row).

        A referral still ``invited`` becomes accepted (an ``acceptance_bhid`` and ``accepted_at``
        appear); an accepted one changes status on its newest acceptance. An approval without
        a reward earns :data:`DEFAULT_REWARD_PTS`. :class:`KeyError` if there is no such row.
        """
        if status not in LATER_STATUSES:
            raise ValueError(f"status must be one of {', '.join(LATER_STATUSES)}")
        for shopid, rows in self.referrals.items():
            matching = [row for row in rows if row.referral_bhid == referral_bhid]
            if not matching:
                continue
            row = max(matching, key=lambda r: r.newest_at)
            if row.acceptance_bhid is None:
                now = self.clock()
                row.acceptance_bhid = self.flakes.at(now)
                row.accepted_at = now
            row.status = status
            if status == "approved":
                if reward_pts is not None:
                    row.reward_pts = reward_pts
                elif row.reward_pts is None and row.reward_amount is None:
                    row.reward_pts = DEFAULT_REWARD_PTS
            return shopid, row
        raise KeyError(referral_bhid)

    def _seed_rows(self, shopid: str) -> list[Referral]:
        """Demo history for alice, bob and demo-* customers; nobody else has any."""
        now = self.clock()

        def row(channel: str, destination: str | None, sent_days: float, **rest: Any) -> Referral:
            sent = now - sent_days * DAY
            bhid = self.flakes.at(sent)
            return Referral(bhid, channel, destination, "invited", self.link(bhid), sent, **rest)

        def accepted(base: Referral, status: str, days_ago: float, **rest: Any) -> Referral:
            at = now - days_ago * DAY
            return Referral(
                base.referral_bhid,
                base.channel,
                base.destination,
                status,
                base.link,
                base.sent_at,
                acceptance_bhid=self.flakes.at(at),
                accepted_at=at,
                **rest,
            )

        if shopid == "bob":
            dan = row("email", "dan@example.com", 12)
            return [accepted(dan, "rejected", 10), row("qr-code", None, 3)]
        if shopid != "alice" and not shopid.startswith("demo-"):
            return []
        friend = row("email", "friend@example.com", 20)
        carol = row("email", "carol@example.com", 5)
        shared = row("custom-social", None, 9)
        return [
            accepted(friend, "approved", 15, reward_pts=500),
            accepted(carol, "qualified", 2),
            accepted(shared, "approved", 8, reward_amount=10_000_000, coupon_code="THANKS-10"),
            accepted(shared, "rejected", 7),
            row("whatsapp", None, 1),
        ]
