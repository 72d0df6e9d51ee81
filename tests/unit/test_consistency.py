"""Consistency tokens (MAC, customer, expiry, rotation) and fresh reads (collapsed, kept)."""

from __future__ import annotations

import asyncio

import pytest

from broker.errors import UpstreamError
from broker.rules.consistency import LIFETIME, ConsistencyTokens, FreshReads, Proof
from tests.support import SECRET_A, SECRET_B, SHOP, make_settings

NOW = 1_800_000_000.0


def tokens(keys: str = f"key-a:{SECRET_A},key-b:{SECRET_B}", now: float = NOW) -> ConsistencyTokens:
    return ConsistencyTokens(make_settings(BROKER_SIGNING_KEYS=keys), lambda: now)


def test_a_token_proves_its_generation_and_time_for_its_customer_only() -> None:
    """The issued token verifies for its customer (generation, send time) and for no other."""
    made = tokens().issue(SHOP, "alice", "1234")
    assert tokens().verify(made, SHOP, "alice") == Proof(1234, int(NOW * 1000))
    assert tokens().verify(made, SHOP, "bob") is None
    assert tokens().verify(made, "other-shop", "alice") is None
    assert tokens().verify(tokens().issue(SHOP, "alice", "x"), SHOP, "alice") == Proof(
        None, int(NOW * 1000)
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x",
        "0",
        "1",
        "v1.x",
        "v1.x.1.2.3",
        "v1.12a.1800000000000." + "A" * 43,
        "\u00b2" * 50,
        "v1." + "9" * 5000,
        "v1.x.1800000000000." + "A" * 43,
        "v2.x.1800000000000." + "A" * 43,
    ],
)
def test_values_the_broker_did_not_issue_are_ignored(value: str) -> None:
    """Client-made values, whatever their shape or length, prove nothing (and never raise)."""
    assert tokens().verify(value, SHOP, "alice") is None


def test_an_altered_token_is_ignored() -> None:
    """Changing the generation or the time breaks the MAC."""
    made = tokens().issue(SHOP, "alice", "x")
    _, gen, sent, mac = made.split(".")
    for changed in (f"v1.0.{sent}.{mac}", f"v1.{gen}.{int(sent) + 1}.{mac}"):
        assert tokens().verify(changed, SHOP, "alice") is None


def test_a_token_expires_and_is_never_from_the_future() -> None:
    """Past its lifetime, or issued beyond the clock leeway ahead, a token is ignored."""
    made = tokens().issue(SHOP, "alice", "7")
    assert tokens(now=NOW + LIFETIME - 1).verify(made, SHOP, "alice") is not None
    assert tokens(now=NOW + LIFETIME + 1).verify(made, SHOP, "alice") is None
    assert tokens(now=NOW - 31).verify(made, SHOP, "alice") is None
    assert tokens(now=NOW - 29).verify(made, SHOP, "alice") is not None


def test_any_configured_key_verifies_and_a_removed_key_does_not() -> None:
    """Signed by the first key; after a rotation the old key still verifies until removed."""
    old = tokens(f"key-a:{SECRET_A}").issue(SHOP, "alice", "x")
    assert tokens(f"key-b:{SECRET_B},key-a:{SECRET_A}").verify(old, SHOP, "alice") is not None
    assert tokens(f"key-b:{SECRET_B}").verify(old, SHOP, "alice") is None


def test_the_mac_key_is_not_the_signing_secret() -> None:
    """The token's MAC is keyed by a derived key: the secret itself never appears."""
    made = tokens().issue(SHOP, "alice", "x")
    assert SECRET_A not in made and len(made) < 120


class Loads:
    def __init__(self, delay: float = 0.05, error: Exception | None = None) -> None:
        self.calls = 0
        self.delay = delay
        self.error = error

    async def __call__(self) -> bytes:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return f"list-{self.calls}".encode()


async def test_concurrent_fresh_reads_share_one_load() -> None:
    """Twenty reads after one send make one load; the others wait for it."""
    fresh, load = FreshReads(keep=60), Loads()
    results = await asyncio.gather(*(fresh.read(("s/a", "v"), 0, load) for _ in range(20)))
    assert load.calls == 1
    assert sorted(how for _, how in results) == ["collapsed"] * 19 + ["miss"]
    assert {body for body, _ in results} == {b"list-1"}


async def test_a_landed_load_answers_later_reads_of_the_same_send() -> None:
    """Reads after the load landed take its body while it is kept; a later send does not."""
    now = [1000.0]
    fresh, load = FreshReads(keep=60, clock=lambda: now[0], monotonic=lambda: now[0]), Loads(0)
    assert await fresh.read(("s/a", "v"), 999_000, load) == (b"list-1", "miss")
    assert await fresh.read(("s/a", "v"), 999_000, load) == (b"list-1", "hit")
    assert await fresh.read(("s/a", "v"), 1_000_001, load) == (b"list-2", "miss")  # newer send
    now[0] += 61
    assert await fresh.read(("s/a", "v"), 999_000, load) == (b"list-3", "miss")  # no longer kept
    fresh.drop("s/a", ("v",))
    assert await fresh.read(("s/a", "v"), 999_000, load) == (b"list-4", "miss")
    assert load.calls == 4


async def test_a_failed_load_is_shared_and_not_kept() -> None:
    """The leader's error reaches its waiters; the next read loads again."""
    fresh, load = FreshReads(keep=60), Loads(error=UpstreamError())
    results = await asyncio.gather(
        *(fresh.read(("s/a", "v"), 0, load) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, UpstreamError) for r in results) and load.calls == 1
    with pytest.raises(UpstreamError):
        await fresh.read(("s/a", "v"), 0, load)
    assert load.calls == 2


async def test_a_cancelled_leader_does_not_cancel_its_waiters() -> None:
    """A leader whose client left: a waiter loads on its own instead of failing."""
    fresh, load = FreshReads(keep=60), Loads(delay=0.2)
    leader = asyncio.ensure_future(fresh.read(("s/a", "v"), 0, load))
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(fresh.read(("s/a", "v"), 0, load))
    await asyncio.sleep(0.01)
    leader.cancel()
    body, how = await waiter
    assert how == "miss" and load.calls == 2 and body == b"list-2"


async def test_kept_bodies_are_bounded_in_bytes() -> None:
    """Past the byte bound, the least recently landed bodies go."""
    fresh, load = FreshReads(keep=60, max_bytes=12), Loads(0)
    for customer in ("a", "b", "c"):
        await fresh.read((f"s/{customer}", "v"), 0, load)
    assert (await fresh.read(("s/a", "v"), 0, load))[1] == "miss"
    assert (await fresh.read(("s/c", "v"), 0, load))[1] == "hit"
