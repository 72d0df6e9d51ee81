"""Idempotency keys: first run, replay, body mismatch, concurrent twins, release on failure."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from broker.errors import IdempotencyKeyReused, UpstreamUnavailable
from broker.store.idempotency import (
    Idempotency,
    MemoryRecords,
    Records,
    RedisRecords,
    StoredResponse,
)
from broker.store.store import Store, Twins, open_store
from tests.servers import RedisProcess
from tests.support import LIFETIMES, Gated, flush, make_settings

SCOPE = "test-shop/alice"
SENT = StoredResponse(200, {"Content-Type": "application/json"}, b'{"message": "sent"}')


class Action(Gated):
    """The Refer2 call's stand-in, answering SENT unless told otherwise."""

    def __init__(self, response: StoredResponse = SENT, **kwargs: Any) -> None:
        super().__init__(response, **kwargs)
        self.response = response


async def test_first_run_then_replay(store: Store) -> None:
    """The first request runs; a repeat with key and body unchanged replays it without running."""
    keys = Idempotency(store, LIFETIMES)
    action = Action(StoredResponse(201, {"X-A": "1"}, b"\x00binary\xff body"))
    first = await keys.run(SCOPE, "key-1", "fp-a", action)
    second = await keys.run(SCOPE, "key-1", "fp-a", action)
    assert first == (action.response, False)
    assert second == (action.response, True)
    assert action.calls == 1


async def test_same_key_with_another_body_is_refused(store: Store) -> None:
    """A completed key reused with a different fingerprint raises IdempotencyKeyReused."""
    keys = Idempotency(store, LIFETIMES)
    await keys.run(SCOPE, "key-1", "fp-a", Action())
    action = Action()
    with pytest.raises(IdempotencyKeyReused):
        await keys.run(SCOPE, "key-1", "fp-b", action)
    assert action.calls == 0


async def test_same_key_with_another_body_while_pending_is_refused(store: Store) -> None:
    """A pending key reused with a different fingerprint is refused at once."""
    keys = Idempotency(store, LIFETIMES)
    gate = asyncio.Event()
    first = Action(gate=gate)
    running = asyncio.create_task(keys.run(SCOPE, "key-1", "fp-a", first))
    await first.started.wait()
    with pytest.raises(IdempotencyKeyReused):
        await keys.run(SCOPE, "key-1", "fp-b", Action())
    gate.set()
    assert await running == (SENT, False)


async def test_concurrent_identical_requests_run_once(store: Store) -> None:
    """Two identical requests at once: one action call, both get its response, one as replay."""
    keys = Idempotency(store, LIFETIMES)
    gate = asyncio.Event()
    action = Action(gate=gate)
    first = asyncio.create_task(keys.run(SCOPE, "key-1", "fp-a", action))
    await action.started.wait()
    second = asyncio.create_task(keys.run(SCOPE, "key-1", "fp-a", action))
    await asyncio.sleep(0.05)
    gate.set()
    assert await first == (SENT, False)
    assert await second == (SENT, True)
    assert action.calls == 1


async def test_waiting_for_a_slow_twin_times_out_with_a_clear_error(store: Store) -> None:
    """A twin still pending after `wait` seconds gets IdempotencyKeyReused 'still in progress'."""
    keys = Idempotency(store, replace(LIFETIMES, idempotency_wait_s=0.2))
    gate = asyncio.Event()
    action = Action(gate=gate)
    first = asyncio.create_task(keys.run(SCOPE, "key-1", "fp-a", action))
    await action.started.wait()
    with pytest.raises(IdempotencyKeyReused, match="still in progress"):
        await keys.run(SCOPE, "key-1", "fp-a", action)
    gate.set()
    await first
    assert action.calls == 1


async def test_action_raising_releases_the_key(store: Store) -> None:
    """If the action raises, the claim is released, the error re-raised, and a retry runs."""
    keys = Idempotency(store, LIFETIMES)
    with pytest.raises(UpstreamUnavailable):
        await keys.run(SCOPE, "key-1", "fp-a", Action(error=UpstreamUnavailable()))
    retry = Action()
    assert await keys.run(SCOPE, "key-1", "fp-a", retry) == (SENT, False)


async def test_twin_waiting_on_a_failed_first_runs_itself(store: Store) -> None:
    """A twin that waited on a request whose action raised runs the action itself."""
    keys = Idempotency(store, LIFETIMES)
    gate = asyncio.Event()
    failing = Action(gate=gate, error=UpstreamUnavailable())
    first = asyncio.create_task(keys.run(SCOPE, "key-1", "fp-a", failing))
    await failing.started.wait()
    retry = Action()
    second = asyncio.create_task(keys.run(SCOPE, "key-1", "fp-a", retry))
    await asyncio.sleep(0.05)
    gate.set()
    with pytest.raises(UpstreamUnavailable):
        await first
    assert await second == (SENT, False)
    assert retry.calls == 1


async def test_keys_are_scoped_per_customer(store: Store) -> None:
    """The same Idempotency-Key from two customers are two independent requests."""
    keys = Idempotency(store, LIFETIMES)
    alice, bob = Action(), Action()
    assert (await keys.run("test-shop/alice", "key-1", "fp-a", alice))[1] is False
    assert (await keys.run("test-shop/bob", "key-1", "fp-b", bob))[1] is False
    assert (alice.calls, bob.calls) == (1, 1)


async def test_replay_is_shared_by_stores_on_one_redis(redis_session: RedisProcess) -> None:
    """A key used through one Store (process) is replayed through another."""
    await flush(redis_session.url)
    settings = make_settings(REDIS_URL=redis_session.url)
    first, second = await open_store(settings), await open_store(settings)
    try:
        action = Action()
        await Idempotency(first, LIFETIMES).run(SCOPE, "key-1", "fp-a", action)
        assert await Idempotency(second, LIFETIMES).run(SCOPE, "key-1", "fp-a", action) == (
            SENT,
            True,
        )
        assert action.calls == 1
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_crashed_owners_claim_is_taken_over(store: Store) -> None:
    """A claim whose owner never finishes holds the key until its take-over time, after which a
    retry claims it and runs (on Redis and on memory alike)."""
    # The take-over time (1.5 s) is far beyond the wait (0.1 s): a busy machine cannot blur them.
    keys = Idempotency(
        store, replace(LIFETIMES, idempotency_wait_s=0.1, claim_ms=1500, pending_keep_ms=900000)
    )
    owner = Action(gate=asyncio.Event())
    crashed = asyncio.create_task(keys.run(SCOPE, "k-crash", "fp", owner))
    await owner.started.wait()  # the owner has claimed the key and is sending
    with pytest.raises(IdempotencyKeyReused):
        await keys.run(SCOPE, "k-crash", "fp", Action())  # the owner may still send
    await asyncio.sleep(1.5)
    retry = Action()
    assert await keys.run(SCOPE, "k-crash", "fp", retry) == (SENT, False)
    assert retry.calls == 1
    crashed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await crashed


async def test_a_pending_claim_outlives_cache_entries_in_redis(
    redis_session: RedisProcess,
) -> None:
    """A pending record's Redis lifetime exceeds a cache entry's, so that eviction takes cache
    entries first (the take-over time is inside the record)."""
    from redis.asyncio import Redis

    await flush(redis_session.url)
    store = await open_store(make_settings(REDIS_URL=redis_session.url))
    client = Redis.from_url(redis_session.url)
    try:
        keys = Idempotency(
            store, replace(LIFETIMES, idempotency_wait_s=0.2, claim_ms=300, pending_keep_ms=900000)
        )
        gate = asyncio.Event()
        owner = asyncio.create_task(keys.run(SCOPE, "k-slow", "fp", Action(gate=gate)))
        await asyncio.sleep(0.05)
        [record] = [key async for key in client.scan_iter(match="rb:*:idem:*")]
        assert await client.pttl(record) > 660_000  # longer than a default cache entry
        gate.set()
        await owner
    finally:
        await client.aclose()
        await store.aclose()


RESPONSE = StoredResponse(201, {"X-A": "1"}, b"\x00sent")
TIMING = {"pending_ms": 60_000, "pending_keep_ms": 120_000, "ttl_ms": 60_000}


@pytest.fixture
def records(store: Store) -> Records:
    """Idempotency records on the backend the Store uses: a real Redis, or process memory."""
    twins: Twins[Records] = store.twins(
        lambda on: RedisRecords(on, **TIMING), lambda on: MemoryRecords(on, **TIMING)
    )
    return twins.redis if twins.redis is not None else twins.memory


async def test_records_claim_complete_and_replay_alike(records: Records) -> None:
    """A claim seen again by its own token is still its own (a retried call), another token
    finds it pending and cannot complete it, the owner's outcome is then what every claim finds."""
    record = "rb:{t}:idem:1"
    assert (await records.claim(record, "fp", "t1")).state == "claimed"
    assert (await records.claim(record, "fp", "t1")).state == "claimed"
    assert (await records.claim(record, "fp", "t2")).state == "pending"
    assert (await records.claim(record, "other", "t2")).state == "mismatch"
    await records.complete(record, "fp", "t2", SENT)  # not the owner: ignored
    assert (await records.claim(record, "fp", "t3")).state == "pending"
    await records.complete(record, "fp", "t1", RESPONSE)
    done = await records.claim(record, "fp", "t3")
    assert (done.state, done.response) == ("done", RESPONSE)
    assert (await records.claim(record, "other", "t3")).state == "mismatch"


async def test_records_release_only_their_own_pending_claim(records: Records) -> None:
    """release by another token keeps the claim; by the owner frees the key; a done record is
    never released."""
    record = "rb:{t}:idem:2"
    await records.claim(record, "fp", "t1")
    await records.release(record, "t2")
    assert (await records.claim(record, "fp", "t2")).state == "pending"
    await records.release(record, "t1")
    assert (await records.claim(record, "fp", "t2")).state == "claimed"
    await records.complete(record, "fp", "t2", RESPONSE)
    await records.release(record, "t2")
    assert (await records.claim(record, "fp", "t3")).state == "done"
