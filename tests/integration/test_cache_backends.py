"""The cache's steps on Redis and on memory: the same answers to the same calls, on both."""

from __future__ import annotations

import asyncio

import pytest

from broker.cache._backends import (
    Entries,
    Lookup,
    MemoryEntries,
    RedisEntries,
    is_json_object,
)
from broker.store.keys import EntryKeys, entry_keys
from broker.store.store import Store, Twins

KEYS = entry_keys("CustomerReferrals2", "v2023061", "test-shop", "alice", "read")
BODY = b'{"referrals": []}'
TIMING = {"lease_ms": 5_000, "gen_ttl_ms": 60_000}


@pytest.fixture
def entries(store: Store) -> Entries:
    """The cache's steps on the backend the Store uses: a real Redis, or process memory."""
    twins: Twins[Entries] = store.twins(
        lambda on: RedisEntries(on, **TIMING), lambda on: MemoryEntries(on, **TIMING)
    )
    assert (twins.redis is not None) == (store.redis is not None)
    return twins.redis if twins.redis is not None else twins.memory


async def look(entries: Entries, token: str, keys: EntryKeys = KEYS) -> Lookup:
    return await entries.lookup(keys, 0, 0, token, True)


async def test_the_first_reader_leads_and_the_next_waits_on_it(entries: Entries) -> None:
    """A miss takes the lease; another token then waits on its holder; the holder's own token
    seen again (a retried call) still leads."""
    first = await look(entries, "t1")
    assert (first.verdict, first.gen, first.body, first.token) == ("lead", 0, None, "t1")
    second = await look(entries, "t2")
    assert (second.verdict, second.holder) == ("wait", "t1")
    assert (await look(entries, "t1")).verdict == "lead"


async def test_a_stored_entry_is_a_hit_until_the_generation_moves(entries: Entries) -> None:
    """put under the current generation makes a hit with its freshness; invalidate bumps the
    generation, after which the entry is gone and a put under the old generation is refused
    (yet gives its lease up)."""
    await look(entries, "t1")
    assert await entries.put(KEYS, BODY, 0, 60_000, 120_000, "t1")
    hit = await look(entries, "t2")
    assert (hit.verdict, hit.body, hit.gen) == ("hit", BODY, 0)
    assert 55_000 < hit.left_ms <= 60_000
    assert await entries.invalidate(KEYS.gen, [KEYS.entry, KEYS.lease], KEYS.prefix) == 1
    after = await look(entries, "t3")
    assert (after.verdict, after.gen, after.body) == ("lead", 1, None)
    assert not await entries.put(KEYS, BODY, 0, 60_000, 120_000, "t3")
    assert (await look(entries, "t4")).verdict == "lead"
    assert await entries.invalidate(KEYS.gen, [], KEYS.prefix) == 2


async def test_a_stale_entry_comes_with_the_lease_then_with_the_back_off(
    entries: Entries,
) -> None:
    """Past freshness the lookup leads, carrying the stale body; once a failed load releases
    the lease with a back-off, the next lookup is told to serve stale ('backoff')."""
    assert await entries.put(KEYS, BODY, 0, 1, 60_000, "")
    await asyncio.sleep(0.02)
    stale = await look(entries, "t1")
    assert (stale.verdict, stale.body) == ("lead", BODY)
    assert stale.left_ms <= 0
    await entries.release(KEYS, "t1", 60_000)
    held_off = await look(entries, "t2")
    assert (held_off.verdict, held_off.body) == ("backoff", BODY)


async def test_release_frees_only_the_holders_lease(entries: Entries) -> None:
    """Another token's release leaves the lease held; the holder's frees it."""
    await look(entries, "t1")
    await entries.release(KEYS, "t2", 0)
    assert (await look(entries, "t3")).verdict == "wait"
    await entries.release(KEYS, "t1", 0)
    assert (await look(entries, "t3")).verdict == "lead"


async def test_reads_are_counted_and_refused_past_the_quota(entries: Entries) -> None:
    """With a quota, each lookup counts one in a window; past the quota it is not allowed and
    nothing else is looked at."""
    counted = [await entries.lookup(KEYS, 2, 30_000, "", False) for _ in range(3)]
    assert [(c.allowed, c.count, c.verdict) for c in counted] == [
        (True, 1, "miss"),
        (True, 2, "miss"),
        (False, 3, "miss"),
    ]
    assert all(0 < c.reset_ms <= 30_000 for c in counted)
    refused = await entries.lookup(KEYS, 2, 30_000, "t1", True)
    assert (refused.allowed, refused.verdict) == (False, "miss")
    assert (await look(entries, "t2")).verdict == "lead"  # the refused read took no lease


def test_only_a_json_object_passes_for_a_stored_body() -> None:
    """A stored body must still be a JSON object: HTML, a list or garbage is a tampered entry."""
    assert is_json_object(b' {"referrals": []}')
    assert not is_json_object(b"[1, 2]")
    assert not is_json_object(b"<html>")
    assert not is_json_object(b"{oops")
