"""Consistency-Token: unforgeable, bound to the customer, counted and collapsed like any read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx2
import pytest

from broker.rules.consistency import ConsistencyTokens
from tests.servers import RedisProcess
from tests.stack import READ_PATH, Broker, Sandbox, running_broker
from tests.support import SECRET_A, SECRET_B, SHOP, make_settings


def reads(sandbox: Sandbox) -> int:
    return sandbox.calls().get("CustomerReferrals2", 0)


def issued(broker: Broker, customer: str, gen: str, at: float | None = None) -> str:
    """A token made with the broker's own keys, as its send would make it (at time ``at``)."""
    clock = time.time if at is None else (lambda: at)
    return ConsistencyTokens(broker.settings, clock).issue(SHOP, customer, gen)


@pytest.fixture
def strict(sandbox: Sandbox, redis_server: RedisProcess) -> Iterator[Broker]:
    """Redis, the near tier on, strict read limits of 5 a minute (counted in Redis)."""
    with running_broker(
        sandbox.url,
        REDIS_URL=redis_server.url,
        BROKER_RATE_LIMIT_SYNC="0",
        BROKER_RATE_LIMIT_READ="5/60s",
    ) as running:
        yield running


def forged(broker: Broker) -> list[str]:
    now = time.time()
    genuine_for_bob = issued(broker, "bob", "x")
    mac = genuine_for_bob.rsplit(".", 1)[1]
    return [
        "x",
        "0",
        "1",
        "9" * 17,
        "9" * 5000,
        f"v1.x.{int(now * 1000)}.{'A' * 43}",
        genuine_for_bob,  # another customer's
        genuine_for_bob.replace("v1.x.", "v1.0.", 1),  # altered
        f"v1.x.{int(now * 1000) + 1}.{mac}",  # another time
        issued(broker, "alice", "x", at=now - 3600),  # expired
        issued(broker, "alice", "x", at=now + 3600),  # from the future
    ]


def test_forged_and_foreign_tokens_are_ignored_as_if_absent(
    broker: Broker, sandbox: Sandbox
) -> None:
    """'x', '0', another customer's, an altered or an expired token: cached reads, one call."""
    assert broker.read().status_code == 200
    for token in forged(broker):
        for _ in range(30 if token == "x" else 2):
            answer = broker.read(headers={"Consistency-Token": token})
            assert answer.status_code == 200, answer.text
            assert "hit" in answer.headers["cache-status"], (token[:20], answer.headers)
    assert reads(sandbox) == 1


def test_every_token_read_is_counted_against_strict_limits(
    strict: Broker, sandbox: Sandbox
) -> None:
    """With 5 reads a minute, 100 reads with 'x' get 5 answers (RateLimit headers), 95 429s."""
    answers = [strict.read(headers={"Consistency-Token": "x"}) for _ in range(100)]
    served = [a for a in answers if a.status_code == 200]
    assert len(served) == 5 and all("ratelimit" in a.headers for a in served)
    assert {a.status_code for a in answers if a not in served} == {429}
    assert reads(sandbox) == 1


@pytest.mark.parametrize("kind", ["zero", "genuine", "genuine-bypass"])
def test_near_tier_answers_to_token_reads_are_counted(
    strict: Broker, sandbox: Sandbox, kind: str
) -> None:
    """'0' or a genuine token never skips the count: 5 reads a minute, whatever is shown."""
    assert strict.read().status_code == 200  # the list is in Redis and the near tier
    token = {"zero": "0", "genuine": issued(strict, "alice", "1"), "genuine-bypass": ""}[kind]
    if kind == "genuine-bypass":
        token = issued(strict, "alice", "x")
    statuses = [strict.read(headers={"Consistency-Token": token}).status_code for _ in range(10)]
    assert statuses == [200] * 4 + [429] * 6
    assert reads(sandbox) <= 2  # the first read, and at most one load the token asked for


def test_a_genuine_token_makes_at_most_one_call_per_send(
    wire_broker: Broker, sandbox: Sandbox
) -> None:
    """A send Redis never heard of: 20 concurrent reads with its token, then 30 more, make one
    Bubblehouse call between them, and every answer holds the list as it is after the send."""
    assert wire_broker.read().status_code == 200
    assert wire_broker.refer({"channel": "sms"}).status_code == 200
    before = reads(sandbox)
    sandbox.fault(delay=0.3, functions=["CustomerReferrals2"])
    token = issued(wire_broker, "alice", "x")
    headers = {**wire_broker.auth(), "Consistency-Token": token}

    async def read_all() -> list[httpx2.Response]:
        async with httpx2.AsyncClient(base_url=wire_broker.url, timeout=10) as client:
            return await asyncio.gather(
                *(client.post(READ_PATH, headers=headers) for _ in range(20))
            )

    answers = asyncio.run(read_all())
    sandbox.clear_faults()
    answers += [wire_broker.client.post(READ_PATH, headers=headers) for _ in range(30)]
    assert {a.status_code for a in answers} == {200}
    assert all(b"sms" in a.content for a in answers)
    assert reads(sandbox) - before == 1
    statuses = {a.headers["cache-status"] for a in answers}
    assert statuses <= {
        "broker; fwd=miss; detail=consistency",
        "broker; fwd=miss; collapsed; detail=consistency",
        "broker; hit; detail=consistency",
    }


def test_a_sends_token_is_honoured_for_its_customer(broker: Broker, sandbox: Sandbox) -> None:
    """The token a send answers with is the broker's own: a read with it holds the referral."""
    assert broker.read().status_code == 200
    sent = broker.refer({"channel": "whatsapp"})
    token = sent.headers["consistency-token"]
    assert token.startswith("v1.") and len(token) < 120
    read = broker.read(headers={"Consistency-Token": token})
    assert read.status_code == 200 and b"whatsapp" in read.content


def test_a_token_survives_a_signing_key_rotation(sandbox: Sandbox) -> None:
    """A token made with the old first key is honoured while that key is still configured."""
    token = ConsistencyTokens(make_settings()).issue(SHOP, "alice", "x")  # key-a signs
    rotated = f"key-b:{SECRET_B},key-a:{SECRET_A}"
    with running_broker(sandbox.url, BROKER_SIGNING_KEYS=rotated) as running:
        assert running.settings.first_shop.signing_keys[0].kid == "key-b"
        assert running.read().status_code == 200
        before = reads(sandbox)
        answer = running.read(headers={"Consistency-Token": token})
        assert answer.headers["cache-status"] == "broker; fwd=miss; detail=consistency"
        assert reads(sandbox) == before + 1
    with running_broker(sandbox.url, BROKER_SIGNING_KEYS=f"key-b:{SECRET_B}") as running:
        assert running.read().status_code == 200
        answer = running.read(headers={"Consistency-Token": token})  # key-a is gone
        assert "hit" in answer.headers["cache-status"]
