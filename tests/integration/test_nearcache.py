"""The near cache: generation rules, freshness, bounded LRU, liveness, and pub/sub invalidation
between two processes (two Stores) on a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from broker.cache.cache import CacheKey, ReferralCache
from broker.cache.near import ENTRY_OVERHEAD, Invalidations, NearCache
from broker.rules.functions import READ, cached_entries
from broker.services import cache_for
from broker.store.keys import customer_scope, entry, scope_prefix
from broker.store.store import Store, open_store
from tests.servers import RedisProcess
from tests.stack import Sandbox, running_broker
from tests.support import SHOP, flush, make_settings

ENTRIES = [(READ.name, "v2023061")]
PREFIX = scope_prefix(customer_scope(SHOP, "alice"))
KEY = entry(PREFIX, READ.name, "v2023061")
BODY = b'{"referrals":[]}'


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live_cache(max_bytes: int = 1 << 20, clock: Callable[[], float] | None = None) -> NearCache:
    near = NearCache(ENTRIES, max_bytes=max_bytes, clock=clock or FakeClock())
    near.set_subscribed(True)
    near.set_store_up(True)
    return near


def test_put_then_get() -> None:
    """A put entry is found with its body and generation."""
    near = live_cache()
    near.put(PREFIX, KEY, BODY, 3, 5000)
    entry = near.get(KEY, 0)
    assert entry is not None
    assert (entry.body, entry.gen) == (BODY, 3)
    assert near.get(f"{PREFIX}:c:v2023061:1", 0) is None


def test_put_refused_after_a_newer_generation_was_announced() -> None:
    """After drop(prefix, 5), an entry of generation 4 is not kept; one of generation 5 is."""
    near = live_cache()
    near.put(PREFIX, KEY, BODY, 4, 5000)
    near.drop(PREFIX, 5)
    assert near.get(KEY, 0) is None
    near.put(PREFIX, KEY, BODY, 4, 5000)
    assert near.get(KEY, 0) is None
    near.put(PREFIX, KEY, BODY, 5, 5000)
    assert near.get(KEY, 0) is not None


def test_drop_without_generation_forgets_every_variant_of_the_customer() -> None:
    """drop(prefix) removes every cached function and version of the customer and leaves other
    customers alone."""
    entries = [(f, v) for f in (READ.name, "CustomerSummary2") for v in ("v2023061", "v2024010")]
    near = NearCache(entries, max_bytes=1 << 20, clock=FakeClock())
    near.set_store_up(True)
    near.set_subscribed(True)
    other = scope_prefix(customer_scope(SHOP, "bob"))
    for function, version in entries:
        near.put(PREFIX, entry(PREFIX, function, version), BODY, 1, 5000)
    near.put(other, entry(other, READ.name, "v2023061"), BODY, 1, 5000)
    near.drop(PREFIX)
    assert len(near) == 1
    assert near.get(entry(other, READ.name, "v2023061"), 0) is not None
    assert near.size == len(BODY) + ENTRY_OVERHEAD


def test_get_with_min_gen_refuses_older_entries() -> None:
    """get(key, min_gen) finds an entry of that generation or newer, never an older one."""
    near = live_cache()
    near.put(PREFIX, KEY, BODY, 7, 5000)
    assert near.get(KEY, 7) is not None
    assert near.get(KEY, 6) is not None
    assert near.get(KEY, 8) is None


def test_entries_expire_with_their_freshness() -> None:
    """An entry is served until fresh_ms have passed on the clock, and not after."""
    clock = FakeClock()
    near = live_cache(clock=clock)
    near.put(PREFIX, KEY, BODY, 1, 2000)
    clock.now += 1.999
    assert near.get(KEY, 0) is not None
    clock.now += 0.001
    assert near.get(KEY, 0) is None


def test_no_freshness_means_nothing_is_kept() -> None:
    """A put with fresh_ms <= 0 stores nothing."""
    near = live_cache()
    near.put(PREFIX, KEY, BODY, 1, 0)
    assert len(near) == 0


def test_bytes_bound_evicts_least_recently_used() -> None:
    """Past max_bytes the least recently used entry goes; a get refreshes recency."""
    body = b"x" * 800
    cost = len(body) + ENTRY_OVERHEAD
    near = live_cache(max_bytes=3 * cost)
    keys = [f"rb:{{{n}}}:c:v2023061:0" for n in range(4)]
    for key in keys[:3]:
        near.put(key.rsplit(":c:", 1)[0], key, body, 1, 5000)
    assert near.get(keys[0], 0) is not None  # keys[1] is now the least recently used
    near.put(keys[3].rsplit(":c:", 1)[0], keys[3], body, 1, 5000)
    assert near.size == 3 * cost <= near.max_bytes
    assert near.get(keys[1], 0) is None
    assert all(near.get(k, 0) is not None for k in (keys[0], keys[2], keys[3]))


def test_entry_larger_than_the_bound_is_not_kept() -> None:
    """A body that alone exceeds max_bytes is refused and evicts nothing."""
    near = live_cache(max_bytes=1000)
    near.put(PREFIX, KEY, BODY, 1, 5000)
    near.put("rb:{big}", "rb:{big}:c:v2023061:0", b"y" * 1000, 1, 5000)
    assert near.get(KEY, 0) is not None
    assert len(near) == 1


def test_replacing_an_entry_keeps_the_size_exact() -> None:
    """Putting the same key twice accounts its bytes once."""
    near = live_cache()
    near.put(PREFIX, KEY, b"{}", 1, 5000)
    near.put(PREFIX, KEY, BODY, 2, 5000)
    assert near.size == len(BODY) + ENTRY_OVERHEAD
    assert len(near) == 1


def test_not_live_ignores_puts() -> None:
    """Until both subscribed and Redis up, put keeps nothing."""
    near = NearCache(ENTRIES, max_bytes=1 << 20, clock=FakeClock())
    near.put(PREFIX, KEY, BODY, 1, 5000)
    near.set_subscribed(True)
    near.put(PREFIX, KEY, BODY, 1, 5000)
    assert (near.live, len(near)) == (False, 0)
    near.set_store_up(True)
    assert near.live
    near.put(PREFIX, KEY, BODY, 1, 5000)
    assert len(near) == 1


@pytest.mark.parametrize("lose", ["subscription", "store"])
def test_going_off_drops_everything_and_coming_back_starts_empty(lose: str) -> None:
    """Losing the subscription or Redis empties the tier (entries and announced generations);
    puts are ignored while off; going live again starts from nothing."""
    near = live_cache()
    near.put(PREFIX, KEY, BODY, 1, 5000)
    near.drop("rb:{other}", 9)
    setter = near.set_subscribed if lose == "subscription" else near.set_store_up
    setter(False)
    assert (near.live, near.size) == (False, 0)
    assert near.get(KEY, 0) is None
    near.put(PREFIX, KEY, BODY, 1, 5000)
    assert len(near) == 0
    setter(True)
    assert near.live and len(near) == 0
    near.put("rb:{other}", "rb:{other}:c:v2023061:0", BODY, 1, 5000)
    assert len(near) == 1  # the generation heard before going off is forgotten too


# --- two processes on one real Redis --------------------------------------------------------


@dataclass
class Process:
    """What one broker process holds: a Store, its near tier, the cache and the subscriber."""

    store: Store
    near: NearCache
    cache: ReferralCache
    listener: Invalidations


async def wait_until(check: Callable[[], bool], within: float, what: str) -> float:
    """Poll ``check`` every few ms; the seconds it took, or fail after ``within`` seconds."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, what
        await asyncio.sleep(0.005)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def process(url: str, probe_interval: float = 0.2) -> AsyncIterator[Process]:
    """One simulated broker process on the Redis at ``url``, subscribed to invalidations."""
    settings = make_settings(REDIS_URL=url)
    store = await open_store(settings, probe_interval=probe_interval)
    near = NearCache(cached_entries(settings.api_versions), max_bytes=1 << 20)
    near.set_store_up(store.state == "up")
    store.on_state_change(lambda state: near.set_store_up(state == "up"))
    listener = Invalidations(store, near, url, ping_interval=0.2, ping_timeout=0.3, retry_delay=0.1)
    task = asyncio.create_task(listener.run())
    try:
        await wait_until(lambda: near.live, 5, "the near tier never went live")
        yield Process(store, near, cache_for(settings, store, near), listener)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.aclose()


ALICE = CacheKey(READ.name, "v2023061", SHOP, "alice")


async def fill(proc: Process, body: bytes = BODY) -> None:
    """Read alice's list through ``proc`` so that its near tier holds it."""

    async def load() -> bytes:
        return body

    await proc.cache.read(ALICE, load, limit=None)
    assert proc.cache.near_hit(ALICE, 0) is not None


async def test_invalidation_on_one_process_drops_the_entry_on_the_other(
    redis_session: RedisProcess,
) -> None:
    """ReferralCache.invalidate on process A empties B's near tier for that customer within
    250 ms, and the token A returns is a generation B's stale entry cannot satisfy."""
    await flush(redis_session.url)
    async with process(redis_session.url) as a, process(redis_session.url) as b:
        await fill(a)
        await fill(b)
        bob = CacheKey(READ.name, "v2023061", SHOP, "bob")

        async def load_bob() -> bytes:
            return b'{"bob":1}'

        await b.cache.read(bob, load_bob, limit=None)
        received = b.listener.received
        old_gen = b.near.get(KEY, 0)
        assert old_gen is not None
        token = await a.cache.invalidate(SHOP, "alice")
        assert a.cache.near_hit(ALICE, 0) is None  # the sender forgets before it answers
        await wait_until(lambda: b.cache.near_hit(ALICE, 0) is None, 0.25, "B kept the list")
        assert b.listener.received == received + 1
        assert int(token) > old_gen.gen
        assert b.cache.near_hit(bob, 0) is not None  # other customers keep their entries


async def test_announced_generation_stops_a_late_put_on_the_other_process(
    redis_session: RedisProcess,
) -> None:
    """After B hears A's invalidation, a put on B under the older generation is refused, and a
    read with A's token on B loads the new list instead of any older one."""
    await flush(redis_session.url)
    async with process(redis_session.url) as a, process(redis_session.url) as b:
        await fill(b)
        token = int(await a.cache.invalidate(SHOP, "alice"))
        await wait_until(lambda: b.near.get(KEY, 0) is None, 0.25, "B kept the list")
        b.near.put(PREFIX, KEY, BODY, token - 1, 5000)
        assert b.near.get(KEY, 0) is None
        calls = []

        async def load() -> bytes:
            calls.append(1)
            return b'{"new":1}'

        served = await b.cache.read(ALICE, load, limit=None, min_gen=token)
        assert served.body == b'{"new":1}' and calls == [1]
        assert b.cache.near_hit(ALICE, token) is not None


async def test_killed_subscription_turns_the_tier_off_then_on(
    redis_session: RedisProcess,
) -> None:
    """CLIENT KILL TYPE pubsub: near.live turns False (entries dropped), then True again once
    the subscriber has subscribed anew."""
    await flush(redis_session.url)
    async with process(redis_session.url) as b:
        await fill(b)
        with capture_logs() as events:
            admin = Redis.from_url(redis_session.url)
            try:
                killed = await admin.client_kill_filter(_type="pubsub")
            finally:
                await admin.aclose()
            assert killed >= 1
            await wait_until(lambda: not b.near.live, 5, "the tier stayed live")
            assert b.cache.near_hit(ALICE, 0) is None
            await wait_until(lambda: b.near.live, 5, "the tier never came back")
        names = [e["event"] for e in events]
        assert "nearcache.off" in names and "nearcache.live" in names
        assert len(b.near) == 0
        await fill(b)  # and it serves again


async def test_stopped_redis_turns_the_tier_off(redis_server: RedisProcess) -> None:
    """A Redis that stops turns the tier off (nothing served from it), and it comes back live
    when Redis does."""
    async with process(redis_server.url) as b:
        await fill(b)
        redis_server.stop()
        await wait_until(lambda: not b.near.live, 5, "the tier outlived Redis")
        assert b.cache.near_hit(ALICE, 0) is None
        redis_server.start()
        await wait_until(lambda: b.near.live, 10, "the tier never came back with Redis")
        assert len(b.near) == 0


async def test_frozen_subscription_turns_the_tier_off(redis_server: RedisProcess) -> None:
    """A Redis that keeps the subscription open but answers nothing (SIGSTOP) turns the tier
    off within 0.8 s (the Store's unanswered heartbeat, or the subscriber's pings),
    with no traffic at all, and it comes back live once Redis answers again."""
    assert redis_server.proc is not None
    async with process(redis_server.url, probe_interval=60) as b:
        await fill(b)
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            took = await wait_until(lambda: not b.near.live, 5, "the tier trusted a frozen Redis")
            assert b.cache.near_hit(ALICE, 0) is None
            assert took < 0.8
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        await wait_until(lambda: b.near.live, 5, "the tier never came back")


@pytest.mark.parametrize("sync", ["0.1", "0"])
def test_near_tier_serves_reads_when_the_read_limit_is_off(
    sandbox: Sandbox, redis_server: RedisProcess, sync: str
) -> None:
    """With BROKER_RATE_LIMIT_READ=0 there is nothing to count in Redis, so a repeated read is
    a near hit (no Redis round trip) whatever BROKER_RATE_LIMIT_SYNC says, and a send through
    the same broker is seen by the next read."""
    with running_broker(
        sandbox.url,
        REDIS_URL=redis_server.url,
        BROKER_RATE_LIMIT_READ="0",
        BROKER_RATE_LIMIT_SYNC=sync,
    ) as broker:
        broker.read()
        second = broker.read()
        assert second.headers["cache-status"].endswith("detail=near")
        assert "ratelimit" not in second.headers
        sent = broker.refer({"channel": "sms"}).json()["referral"]
        listed = broker.read().json()["referrals"]
        assert sent["referral_bhid"] in {r["referral_bhid"] for r in listed}


def test_strict_read_limit_never_skips_redis(sandbox: Sandbox, redis_server: RedisProcess) -> None:
    """In strict mode (BROKER_RATE_LIMIT_SYNC=0) every read is counted in Redis, so none is
    answered from the near tier and the limit holds exactly."""
    with running_broker(
        sandbox.url,
        REDIS_URL=redis_server.url,
        BROKER_RATE_LIMIT_READ="3/60s",
        BROKER_RATE_LIMIT_SYNC="0",
    ) as broker:
        answers = [broker.read() for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert not any(a.headers.get("cache-status", "").endswith("detail=near") for a in answers)
    assert answers[2].headers["ratelimit"] == '"read";r=0;t=60'
