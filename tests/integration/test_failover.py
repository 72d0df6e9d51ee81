"""Redis failover (spec 5): outages, write pauses and restarts in the middle of reads and sends,
with real redis-server processes; what a process keeps while Redis cannot hear it, and what it
makes good when Redis answers again."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable

import pytest
import redis as sync_redis
from redis.asyncio import Redis
from structlog.testing import capture_logs

from broker.cache.cache import CacheKey
from broker.config.settings import RateLimit
from broker.errors import RateLimitExceeded
from broker.rules.functions import READ
from broker.services import cache_for
from broker.store.idempotency import Idempotency, StoredResponse
from broker.store.keys import customer_scope, scope_prefix
from broker.store.limits import Decision, LocalLimits, counters
from broker.store.memory import Memory
from broker.store.store import Store, open_store
from tests.servers import RedisProcess, Relay
from tests.stack import Broker, Sandbox, running_broker
from tests.support import LIFETIMES, SHOP, Gated, make_settings

ALICE = CacheKey(READ.name, "v2023061", SHOP, "alice")


async def until(condition: Callable[[], bool], within: float, what: str) -> float:
    """Seconds until ``condition`` holds, polled every 5 ms; fails after ``within`` seconds."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, what
        await asyncio.sleep(0.005)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def stores(url: str, count: int, probe_interval: float = 1.0) -> AsyncIterator[list[Store]]:
    """``count`` Stores on one Redis: as many broker processes."""
    settings = make_settings(REDIS_URL=url)
    opened = [await open_store(settings, probe_interval=probe_interval) for _ in range(count)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.aclose()


class Lists:
    """A customer's referral list as Bubblehouse holds it: a version that each send bumps."""

    def __init__(self) -> None:
        self.version = 1
        self.loads = 0

    async def load(self) -> bytes:
        self.loads += 1
        return b'{"version": %d}' % self.version


async def test_a_list_read_during_an_outage_is_kept_at_most_250_ms(
    redis_server: RedisProcess,
) -> None:
    """Redis down, two processes: B keeps the list it read for 250 ms at most, so after A's
    send (which B cannot hear) B's next read 300 ms later holds it."""
    async with stores(redis_server.url, 2, probe_interval=60) as (a_store, b_store):
        a, b = cache_for(make_settings(), a_store), cache_for(make_settings(), b_store)
        redis_server.stop()
        await until(lambda: a_store.state == b_store.state == "down", 3, "Redis stayed up")
        bubblehouse = Lists()
        first = await b.read(ALICE, bubblehouse.load, limit=None)
        assert first.body == b'{"version": 1}'
        assert (await b.read(ALICE, bubblehouse.load, limit=None)).outcome == "hit"  # collapsing
        bubblehouse.version = 2
        await a.invalidate(SHOP, "alice")  # A's send: B never hears of it
        await asyncio.sleep(0.3)
        later = await b.read(ALICE, bubblehouse.load, limit=None)
        assert later.body == b'{"version": 2}'


def list_ids(broker: Broker, **kwargs: object) -> set[str]:
    answer = broker.read(**kwargs)  # type: ignore[arg-type]  # headers only
    assert answer.status_code == 200, answer.text
    return {r["referral_bhid"] for r in answer.json()["referrals"]}


def test_a_write_pause_never_leaves_another_process_serving_the_old_list(
    sandbox: Sandbox, redis_server: RedisProcess
) -> None:
    """CLIENT PAUSE 3000 WRITE (a failover) while A sends: B stops serving the older list
    within 250 ms of A's answer (from its near tier or Redis), and once the pause ends B never
    serves or re-stores it from Redis: A's invalidation is replayed before Redis serves."""
    plain = sync_redis.Redis.from_url(redis_server.url)
    url = redis_server.url
    try:
        with (
            running_broker(sandbox.url, REDIS_URL=url) as a,
            running_broker(sandbox.url, REDIS_URL=url) as b,
        ):
            list_ids(b)
            assert b.read().headers["cache-status"].endswith("detail=near")
            plain.client_pause(3000, all=False)
            paused = time.monotonic()
            sent = a.refer({"channel": "sms"})
            assert sent.status_code == 200, sent.text
            answered = time.monotonic()
            new = sent.json()["referral"]["referral_bhid"]
            time.sleep(0.25)
            assert new in list_ids(b), "B served the list from before the send"
            while time.monotonic() - paused < 3.2:
                assert new in list_ids(b)
                time.sleep(0.05)
            for _ in range(20):  # after the pause: from Redis, then from the near tier again
                assert new in list_ids(b), "B served the old list from Redis after the pause"
                time.sleep(0.05)
            assert answered - paused < 1.5
    finally:
        plain.close()


async def test_a_timed_out_write_is_replayed_as_soon_as_redis_takes_writes(
    redis_server: RedisProcess,
) -> None:
    """An invalidation held back by a write pause is written as soon as the pause ends, without
    waiting for the next probe (a minute away here), before the Store is up again."""
    async with stores(redis_server.url, 1, probe_interval=60) as (store,):
        cache = cache_for(make_settings(), store)
        bubblehouse = Lists()
        await cache.read(ALICE, bubblehouse.load, limit=None)
        plain = Redis.from_url(redis_server.url)
        try:
            gen_key = scope_prefix(customer_scope(SHOP, "alice")) + ":g"
            before = int(await plain.get(gen_key) or 0)
            await plain.client_pause(1500, all=False)
            started = time.monotonic()
            await cache.invalidate(SHOP, "alice")
            assert store.state == "down"
            await until(lambda: store.state == "up", 3, "the Store never came back")
            assert time.monotonic() - started < 2.5
            assert int(await plain.get(gen_key) or 0) > before  # replayed before it was up
        finally:
            await plain.aclose()


async def test_a_lease_a_cut_off_leader_left_on_redis_is_given_up_when_it_is_back(
    redis_server: RedisProcess,
) -> None:
    """Process A takes a cold read's lease on Redis, then its path to Redis is cut before it can
    store the list or give the lease up. B's reader, waiting on that lease, loads the list
    itself as soon as A reaches Redis again (A gives the lease up there first), rather than
    waiting out the lease and answering 504 upstream_timeout."""
    settings = make_settings(REDIS_URL=redis_server.url)
    # A generous Redis timeout: only the cut may turn A down, never a slow heartbeat on a busy
    # machine (the cut resets connections, which trips the Store at once whatever the timeout).
    async with Relay(redis_server.port) as relay:
        a = await open_store(
            make_settings(REDIS_URL=relay.redis_url), probe_interval=0.05, redis_timeout=2.0
        )
        b = await open_store(settings, redis_timeout=2.0)
        try:
            gate = asyncio.Event()
            for_a, for_b = Gated(b'{"loaded": "a"}', gate=gate), Gated(b'{"loaded": "b"}')
            leading = asyncio.create_task(cache_for(settings, a).read(ALICE, for_a, limit=None))
            await for_a.started.wait()
            waiting = asyncio.create_task(cache_for(settings, b).read(ALICE, for_b, limit=None))
            await asyncio.sleep(0.2)
            assert not waiting.done(), "B did not wait on A's lease"
            relay.cut()
            gate.set()
            assert (await leading).body == b'{"loaded": "a"}'
            assert a.state == "down"
            await asyncio.sleep(0.3)
            assert not waiting.done(), "B stopped waiting while A's lease still stood"
            relay.mend()
            served = await waiting
            assert (served.body, for_b.calls) == (b'{"loaded": "b"}', 1)
            await until(lambda: a.state == "up", 3, "A's Store never came back")
        finally:
            await b.aclose()
            await a.aclose()


async def test_an_outcome_redis_missed_is_replayed_so_a_retry_never_sends_again(
    redis_server: RedisProcess,
) -> None:
    """Redis stops (and restarts empty) during a keyed send: the outcome is written to Redis
    on recovery, so a retry with the same key through another process, long after, is answered
    from it and never runs the send a second time."""
    sends: list[str] = []

    async def first_send() -> StoredResponse:
        sends.append("first")
        redis_server.stop()
        return StoredResponse(200, {"Content-Type": "application/json"}, b'{"referral": 1}')

    async def second_send() -> StoredResponse:
        sends.append("again")
        return StoredResponse(200, {}, b'{"referral": 2}')

    async with stores(redis_server.url, 1, probe_interval=0.05) as (a,):
        response, replayed = await Idempotency(a, LIFETIMES).run(
            "test-shop/alice", "order-1", "fp", first_send
        )
        assert not replayed and a.state == "down"
        await asyncio.sleep(1.8)
        redis_server.start()
        await until(lambda: a.state == "up", 10, "the Store never came back")
    async with stores(redis_server.url, 1) as (b,):
        again, replayed = await Idempotency(b, LIFETIMES).run(
            "test-shop/alice", "order-1", "fp", second_send
        )
    assert replayed and again == response
    assert sends == ["first"]


async def test_a_bug_inside_an_operation_deletes_no_key_and_propagates(
    redis_server: RedisProcess,
) -> None:
    """A ValueError or TypeError raised by the broker's own code inside a Redis operation is a
    bug: it reaches the caller (a 500), deletes none of the operation's keys, answers nothing
    from memory and leaves Redis up."""
    async with stores(redis_server.url, 1) as (store,):
        twins = counters(store)
        plain = Redis.from_url(redis_server.url)
        try:
            await plain.set("rb:{t}:idem:x", "kept")
            for bug in (ValueError("ours"), TypeError("ours")):

                async def buggy(_: object, bug: Exception = bug) -> None:
                    raise bug

                with capture_logs() as events, pytest.raises(type(bug)):
                    await store.run(twins, buggy, op="limit_hit", keys=["rb:{t}:idem:x"])
                assert not [e for e in events if e["event"].startswith("store.")]
            assert await plain.get("rb:{t}:idem:x") == b"kept"
            assert store.state == "up" and store.fallbacks == 0
        finally:
            await plain.aclose()


async def test_the_memory_store_is_bounded_in_bytes() -> None:
    """Without Redis, 30 customers with 3 MB lists hold no more than the store's byte budget
    (here 16 MiB), measured by what Python has allocated, and the newest lists are served."""
    store = Store(memory=Memory(max_bytes=16 << 20))
    cache = cache_for(make_settings(), store)
    body = b'{"referrals": "' + b"x" * (3 << 20) + b'"}'

    async def load() -> bytes:
        return bytes(bytearray(body))  # a fresh copy each time, as a real upstream answer is

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for customer in range(30):
            key = CacheKey(READ.name, "v2023061", SHOP, f"customer-{customer}")
            await cache.read(key, load, limit=None)
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert store.memory.size <= 16 << 20
    assert held < 20 << 20, f"{held >> 20} MiB held"
    newest = CacheKey(READ.name, "v2023061", SHOP, "customer-29")
    assert (await cache.read(newest, load, limit=None)).outcome == "hit"


async def take(limits: LocalLimits, prefix: str, limit: RateLimit) -> Decision:
    """One read counted as Limits.hit counts it (a first sight reads the shared count)."""
    decided = limits.hit("read", prefix, limit)
    return decided if decided is not None else await limits.first("read", prefix, limit)


async def test_a_process_that_first_meets_a_window_reads_its_shared_count(
    redis_server: RedisProcess,
) -> None:
    """Synchronised limits (6 reads a window): six reads through A, pushed; the first read of
    the same customer through B, which never saw the window, is refused, and one round trip
    is all it took."""
    async with stores(redis_server.url, 2) as (a_store, b_store):
        a, b = LocalLimits(a_store, 0.1), LocalLimits(b_store, 0.1)
        prefix, limit = scope_prefix(customer_scope(SHOP, "alice")), RateLimit(6, 60)
        assert [(await take(a, prefix, limit)).remaining for _ in range(6)] == [5, 4, 3, 2, 1, 0]
        await a.sync()
        calls = b_store.redis_calls
        with pytest.raises(RateLimitExceeded) as refused:
            await take(b, prefix, limit)
        assert refused.value.headers()["RateLimit"].startswith('"read";r=0')
        assert b_store.redis_calls == calls + 1
        other = scope_prefix(customer_scope(SHOP, "bob"))
        assert (await take(b, other, limit)).remaining == 5  # another customer: its own window
        assert b.hit("read", other, limit) is not None  # known now: decided with no round trip


async def test_a_frozen_redis_turns_the_store_down_without_traffic(
    redis_server: RedisProcess,
) -> None:
    """SIGSTOP on redis-server, no traffic: the heartbeat turns the Store down within half a
    0.8 s (not after a probe interval, a minute here), and up again after SIGCONT."""
    assert redis_server.proc is not None
    async with stores(redis_server.url, 1, probe_interval=60) as (store,):
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            took = await until(lambda: store.state == "down", 3, "a frozen Redis stayed up")
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        assert took < 0.8
        await until(lambda: store.state == "up", 3, "the Store never came back")
