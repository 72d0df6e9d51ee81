"""Rate limits: counting, headers, refusal, sharing through Redis, window rollover."""

from __future__ import annotations

import asyncio
import re

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from broker.config.settings import RateLimit
from broker.errors import RateLimitExceeded
from broker.store.keys import customer_scope, scope_prefix
from broker.store.keys import rate as rate_key
from broker.store.limits import Decision, Limiter, LocalLimits, counters
from broker.store.store import Store, open_store
from tests.servers import RedisProcess
from tests.support import flush, make_settings

# RateLimit-Policy / RateLimit as structured-field lists (draft-ietf-httpapi-ratelimit-headers).
POLICY_RE = re.compile(r'^"(read|write|issuer)";q=\d+;w=\d+$')
RATELIMIT_RE = re.compile(r'^"(read|write|issuer)";r=\d+;t=\d+$')


def test_headers_use_the_structured_field_syntax() -> None:
    """Decision.headers() writes RateLimit-Policy and RateLimit as named sf-list items."""
    decision = Decision(RateLimit(20, 60), remaining=7, reset=42, policy="write")
    assert decision.headers() == {
        "RateLimit-Policy": '"write";q=20;w=60',
        "RateLimit": '"write";r=7;t=42',
    }


async def test_disabled_limit_counts_nothing(store: Store) -> None:
    """A limit of None (configured 0) returns None and never refuses."""
    limiter = Limiter(store)
    for _ in range(5):
        assert await limiter.hit("write", "scope", None) is None


async def test_hits_count_down_then_refuse(store: Store) -> None:
    """Each hit lowers remaining; the hit past the limit raises 429 with headers and Retry-After."""
    limiter = Limiter(store)
    limit = RateLimit(3, 30)
    remaining = []
    for _ in range(3):
        decision = await limiter.hit("write", "shop/alice", limit)
        assert decision is not None
        assert POLICY_RE.match(decision.headers()["RateLimit-Policy"])
        assert RATELIMIT_RE.match(decision.headers()["RateLimit"])
        assert 0 < decision.reset <= 30
        remaining.append(decision.remaining)
    assert remaining == [2, 1, 0]
    with pytest.raises(RateLimitExceeded) as caught:
        await limiter.hit("write", "shop/alice", limit)
    headers = caught.value.headers()
    assert 1 <= int(headers["Retry-After"]) <= 30
    assert headers["RateLimit-Policy"] == '"write";q=3;w=30'
    assert re.match(r'^"write";r=0;t=\d+$', headers["RateLimit"])


async def test_scopes_and_policies_are_counted_apart(store: Store) -> None:
    """One scope's exhausted window leaves other scopes and other policies untouched."""
    limiter = Limiter(store)
    limit = RateLimit(1, 30)
    await limiter.hit("write", "shop/alice", limit)
    with pytest.raises(RateLimitExceeded):
        await limiter.hit("write", "shop/alice", limit)
    assert await limiter.hit("write", "shop/bob", limit) is not None
    assert await limiter.hit("issuer", "shop/alice", limit) is not None


async def test_window_rolls_over(store: Store) -> None:
    """Once the window has passed, the full quota is available again."""
    limiter = Limiter(store)
    limit = RateLimit(2, 1)
    await limiter.hit("read", "scope", limit)
    await limiter.hit("read", "scope", limit)
    with pytest.raises(RateLimitExceeded) as caught:
        await limiter.hit("read", "scope", limit)
    assert caught.value.retry_after == 1
    await asyncio.sleep(1.05)
    decision = await limiter.hit("read", "scope", limit)
    assert decision is not None
    assert decision.remaining == 1


async def test_limits_are_shared_by_stores_on_one_redis(redis_session: RedisProcess) -> None:
    """Two Stores on one Redis (two processes) draw from one window."""
    await flush(redis_session.url)
    settings = make_settings(REDIS_URL=redis_session.url)
    first, second = await open_store(settings), await open_store(settings)
    try:
        limit = RateLimit(4, 30)
        for limiter in (Limiter(first), Limiter(second), Limiter(first), Limiter(second)):
            await limiter.hit("write", "shop/alice", limit)
        with pytest.raises(RateLimitExceeded):
            await Limiter(second).hit("write", "shop/alice", limit)
        with pytest.raises(RateLimitExceeded):
            await Limiter(first).hit("write", "shop/alice", limit)
    finally:
        await first.aclose()
        await second.aclose()


async def test_concurrent_hits_never_exceed_the_limit(store: Store) -> None:
    """Of many simultaneous hits exactly `limit` are allowed (the count is atomic)."""
    limiter = Limiter(store)
    limit = RateLimit(10, 30)

    async def one() -> bool:
        try:
            await limiter.hit("read", "scope", limit)
        except RateLimitExceeded:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(40)))
    assert sum(results) == 10


# --- synchronised local limits (BROKER_RATE_LIMIT_SYNC > 0) ---------------------------------


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


ALICE = scope_prefix(customer_scope("shop", "alice"))
BOB = scope_prefix(customer_scope("shop", "bob"))


async def take(limits: LocalLimits, policy: str, prefix: str, limit: RateLimit) -> Decision:
    """One request counted as Limits.hit counts it: in process, or on a first sight of the
    window while Redis is up, in Redis after reading the shared count."""
    decided = limits.hit(policy, prefix, limit)
    return decided if decided is not None else await limits.first(policy, prefix, limit)


async def test_local_hits_count_down_refuse_and_roll_over() -> None:
    """LocalLimits counts each hit, refuses past the limit with the RateLimit headers and a
    Retry-After of the window's rest, and opens a new window once the old one has ended."""
    clock = FakeClock()
    limits = LocalLimits(Store(), 0.1, clock=clock)
    limit = RateLimit(3, 10)
    decisions = [await take(limits, "read", ALICE, limit) for _ in range(3)]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    assert decisions[0].headers() == {
        "RateLimit-Policy": '"read";q=3;w=10',
        "RateLimit": '"read";r=2;t=10',
    }
    clock.now += 4
    with pytest.raises(RateLimitExceeded) as caught:
        await take(limits, "read", ALICE, limit)
    headers = caught.value.headers()
    assert headers["Retry-After"] == "6"
    assert headers["RateLimit"] == '"read";r=0;t=6'
    assert headers["RateLimit-Policy"] == '"read";q=3;w=10'
    assert (await take(limits, "read", BOB, limit)).remaining == 2  # another scope, its own window
    assert (await take(limits, "write", ALICE, limit)).remaining == 2  # another policy too
    clock.now += 6
    fresh = await take(limits, "read", ALICE, limit)
    assert (fresh.remaining, fresh.reset) == (2, 10)


async def test_memory_store_keeps_exact_local_counts() -> None:
    """With no Redis, sync() changes nothing: counts stay exact across any number of syncs."""
    limits = LocalLimits(Store(), 0.1)
    limit = RateLimit(6, 30)
    for _ in range(3):
        await take(limits, "write", ALICE, limit)
    for _ in range(3):
        await limits.sync()
    assert (await take(limits, "write", ALICE, limit)).remaining == 2
    await limits.sync()
    await take(limits, "write", ALICE, limit)
    await take(limits, "write", ALICE, limit)
    with pytest.raises(RateLimitExceeded):
        await take(limits, "write", ALICE, limit)


async def test_two_processes_converge_after_sync(redis_session: RedisProcess) -> None:
    """Two LocalLimits on two Stores on one Redis: after each has synced, each one's count
    includes what the other counted, and the shared window refuses on both."""
    await flush(redis_session.url)
    settings = make_settings(REDIS_URL=redis_session.url)
    first, second = await open_store(settings), await open_store(settings)
    try:
        a, b = LocalLimits(first, 0.1), LocalLimits(second, 0.1)
        limit = RateLimit(10, 30)
        for _ in range(3):
            await take(a, "read", ALICE, limit)
        for _ in range(2):
            await take(b, "read", ALICE, limit)
        await a.sync()
        await b.sync()  # b learns 3 + 2
        await a.sync()  # a learns b's 2
        assert (await take(a, "read", ALICE, limit)).remaining == 4  # the 6th request of the window
        # b has not heard of a's 6th, so it counts its own as the 6th too: the overshoot that
        # synchronised limits allow (one interval's worth), gone at the next syncs.
        assert (await take(b, "read", ALICE, limit)).remaining == 4
        await a.sync()
        await b.sync()
        await a.sync()
        for _ in range(3):
            await take(a, "read", ALICE, limit)  # 8th to 10th
        with pytest.raises(RateLimitExceeded):
            await take(a, "read", ALICE, limit)
        await a.sync()
        await b.sync()
        with pytest.raises(RateLimitExceeded):
            await take(b, "read", ALICE, limit)
        assert a.syncs == 5 and b.syncs == 3
    finally:
        await first.aclose()
        await second.aclose()


async def test_redis_down_leaves_local_counting_working(redis_server: RedisProcess) -> None:
    """When Redis dies, sync() neither raises nor loses counts: the local counters stand alone
    and refuse at exactly the limit."""
    store = await open_store(make_settings(REDIS_URL=redis_server.url))
    try:
        limits = LocalLimits(store, 0.1)
        limit = RateLimit(5, 30)
        await take(limits, "write", ALICE, limit)
        await limits.sync()
        redis_server.stop()
        await take(limits, "write", ALICE, limit)
        await limits.sync()
        assert store.state == "down"
        await take(limits, "write", ALICE, limit)
        await limits.sync()
        assert (await take(limits, "write", ALICE, limit)).remaining == 1
        await take(limits, "write", ALICE, limit)
        with pytest.raises(RateLimitExceeded):
            await take(limits, "write", ALICE, limit)
    finally:
        await store.aclose()


async def test_poisoned_shared_counter_is_repaired_by_sync(redis_session: RedisProcess) -> None:
    """A shared counter overwritten with a non-integer: sync() logs store.key_error, Redis stays
    up, and the counter is rewritten with this process's count."""
    await flush(redis_session.url)
    store = await open_store(make_settings(REDIS_URL=redis_session.url))
    plain = Redis.from_url(redis_session.url)
    try:
        limits = LocalLimits(store, 0.1)
        limit = RateLimit(10, 30)
        await take(limits, "read", ALICE, limit)
        await limits.sync()
        await plain.set(rate_key(ALICE, "read"), "lots")
        await take(limits, "read", ALICE, limit)
        with capture_logs() as events:
            await limits.sync()
        names = [e["event"] for e in events]
        assert "store.key_error" in names and "store.redis_down" not in names
        assert store.state == "up"
        assert await plain.get(rate_key(ALICE, "read")) == b"1"
        assert await plain.pttl(rate_key(ALICE, "read")) > 0
    finally:
        await plain.aclose()
        await store.aclose()


async def test_one_push_gives_each_counter_its_own_window(redis_session: RedisProcess) -> None:
    """Counters of policies with different windows, pushed in one script, each expire after
    their own window (not the first counter's)."""
    await flush(redis_session.url)
    store = await open_store(make_settings(REDIS_URL=redis_session.url))
    plain = Redis.from_url(redis_session.url)
    try:
        limits = LocalLimits(store, 0.1)
        await take(limits, "read", ALICE, RateLimit(10, 5))
        await take(limits, "write", ALICE, RateLimit(10, 600))
        await take(limits, "read", BOB, RateLimit(10, 5))
        await limits.sync()
        assert 0 < await plain.pttl(rate_key(ALICE, "read")) <= 5_000
        assert 5_000 < await plain.pttl(rate_key(ALICE, "write")) <= 600_000
        assert 0 < await plain.pttl(rate_key(BOB, "read")) <= 5_000
        assert [await plain.get(rate_key(p, "read")) for p in (ALICE, BOB)] == [b"1", b"1"]
    finally:
        await plain.aclose()
        await store.aclose()


async def test_counters_hit_alike_on_redis_and_memory(store: Store) -> None:
    """The counters' hit opens a window at the first count and counts in it, on both backends;
    only the Redis counters are shared."""
    twins = counters(store)
    on = twins.redis if twins.redis is not None else twins.memory
    first, second = await on.hit("rb:{t}:rl:x", 30_000), await on.hit("rb:{t}:rl:x", 30_000)
    assert (first.count, second.count) == (1, 2)
    assert 0 < second.reset_ms <= first.reset_ms <= 30_000
    assert on.shared == (store.redis is not None)
