"""The rules of reading and sending (broker.rules.referrals), without HTTP: a fake transport stands
in for Bubblehouse and the store is process memory."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import pytest

from broker.config.settings import Settings
from broker.errors import RateLimitExceeded
from broker.rules.referrals import Referrals
from broker.rules.tokens import Customer
from broker.services import build
from broker.store.limits import LocalLimits
from broker.store.store import Store
from broker.telemetry.metrics import Metrics
from broker.telemetry.request import RequestInfo
from broker.upstream.client import Upstream
from broker.upstream.transport import Answer, FakeTransport
from tests.support import SHOP, make_settings

VERSION = "v2023061"
ALICE = Customer(SHOP, "alice", None, 2_000_000_000)


class Bubblehouse:
    """A stand-in that keeps referrals per customer and counts calls per function."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.calls: dict[str, int] = {"CustomerReferrals2": 0, "Refer2": 0}
        self.fail_sends = False

    def __call__(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        function = path.rsplit("/", 1)[1]
        self.calls[function] += 1
        json = {"Content-Type": "application/json"}
        if function == "Refer2":
            if self.fail_sends:
                return Answer(500, json, b'{"id": "internal_error"}')
            self.sent.append(orjson.loads(body)["channel"])
            return Answer(200, json, orjson.dumps({"referral": {"n": len(self.sent)}}))
        return Answer(200, json, orjson.dumps({"referrals": list(self.sent)}))


def info() -> RequestInfo:
    return RequestInfo("req-1", "0" * 32, f"00-{'1' * 32}-{'2' * 16}-01")


def rules(settings: Settings, bubblehouse: Bubblehouse, *, local: bool = True) -> Referrals:
    """The read and send rules wired as the broker wires them (services.build), over process
    memory and a fake transport."""
    store = Store()
    upstream = Upstream.create(settings, FakeTransport(bubblehouse))
    local_limits = LocalLimits(store, 0.1) if local else None
    return build(settings, store, upstream, Metrics(), local=local_limits).referrals


@pytest.fixture
def bubblehouse() -> Bubblehouse:
    """A fresh stand-in for Bubblehouse."""
    return Bubblehouse()


async def test_a_read_is_loaded_once_then_served_from_the_cache(bubblehouse: Bubblehouse) -> None:
    """The first read calls Bubblehouse; the second is a cache hit with the same body."""
    referrals = rules(make_settings(), bubblehouse)
    first, _ = await referrals.read(info(), ALICE, VERSION, {}, None)
    second, decision = await referrals.read(info(), ALICE, VERSION, {}, None)
    assert (first.outcome, second.outcome) == ("miss", "hit")
    assert first.body == second.body == b'{"referrals":[]}'
    assert bubblehouse.calls["CustomerReferrals2"] == 1
    assert decision is not None and decision.remaining == 58  # 60 reads in 10 s by default


async def test_reads_past_the_limit_are_refused_locally(bubblehouse: Bubblehouse) -> None:
    """The read limit is counted in process: the third read of two allowed is refused."""
    referrals = rules(make_settings(BROKER_RATE_LIMIT_READ="2/60s"), bubblehouse)
    await referrals.read(info(), ALICE, VERSION, {}, None)
    await referrals.read(info(), ALICE, VERSION, {}, None)
    with pytest.raises(RateLimitExceeded):
        await referrals.read(info(), ALICE, VERSION, {}, None)


async def test_a_send_invalidates_and_hands_back_a_consistency_token(
    bubblehouse: Bubblehouse,
) -> None:
    """After a send the next read asks Bubblehouse again and holds the new referral; the send's
    answer carries the generation it produced."""
    referrals = rules(make_settings(), bubblehouse)
    await referrals.read(info(), ALICE, VERSION, {}, None)
    sent = await referrals.send(info(), ALICE, VERSION, {"channel": "sms"}, None, "")
    assert sent.response.status == 200 and not sent.replayed
    token = sent.response.headers["Consistency-Token"]
    assert token.startswith("v1.1.")  # the generation the invalidation made, then time and MAC
    after, _ = await referrals.read(info(), ALICE, VERSION, {}, token)
    assert after.body == b'{"referrals":["sms"]}'
    assert bubblehouse.calls["CustomerReferrals2"] == 2


async def test_a_repeated_key_replays_without_calling_again(bubblehouse: Bubblehouse) -> None:
    """The same Idempotency-Key and body: the first answer again, Bubblehouse called once."""
    referrals = rules(make_settings(), bubblehouse, local=False)
    payload = {"channel": "sms"}
    first = await referrals.send(info(), ALICE, VERSION, payload, "key-1", "fp")
    again = await referrals.send(info(), ALICE, VERSION, payload, "key-1", "fp")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.response.body == first.response.body
    assert bubblehouse.calls["Refer2"] == 1


async def test_a_send_that_may_have_arrived_keeps_its_key(bubblehouse: Bubblehouse) -> None:
    """A 5xx from Bubblehouse is remembered under the key (it may have sent): the retry gets
    the same 502 and makes no second call."""
    bubblehouse.fail_sends = True
    referrals = rules(make_settings(), bubblehouse)
    first = await referrals.send(info(), ALICE, VERSION, {"channel": "sms"}, "key-2", "fp")
    bubblehouse.fail_sends = False
    retry = await referrals.send(info(), ALICE, VERSION, {"channel": "sms"}, "key-2", "fp")
    assert first.response.status == retry.response.status == 502
    assert retry.replayed and bubblehouse.calls["Refer2"] == 1
