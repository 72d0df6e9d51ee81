"""The referral cache: hits, collapsed misses, read-your-writes, stale-if-error, the read limit."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from broker import services
from broker.cache.cache import CacheKey, ReferralCache
from broker.config.lifetimes import Lifetimes
from broker.config.settings import RateLimit
from broker.errors import (
    BrokerError,
    RateLimitExceeded,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from broker.rules.functions import READ
from broker.store.store import Store, open_store
from tests.servers import RedisProcess
from tests.support import SHOP, Gated, flush, make_settings

VERSION = "v2023061"
BODY = b'{"referrals": [{"id": "r1", "z": 1, "a": 2}],  "next": null}'
# One RFC 9211 Cache-Status member: the cache's name, then parameters.
CACHE_STATUS_RE = re.compile(
    r"^broker(; (hit|fwd=(miss|stale)|ttl=-?\d+|stored|collapsed|detail=[A-Za-z][\w:/.-]*))+$"
)


class Upstream(Gated):
    """The upstream call's stand-in, answering BODY unless told otherwise."""

    def __init__(self, body: bytes = BODY, **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self.body = body


def key(customer: str = "alice", *, function: str = "", version: str = VERSION) -> CacheKey:
    return CacheKey(function or READ.name, version, SHOP, customer)


async def redis_keys(url: str) -> list[str]:
    client = Redis.from_url(url)
    try:
        # A client without decode_responses answers bytes; redis-py types them bytes | str.
        return sorted(k.decode() for k in cast(list[bytes], await client.keys("*")))
    finally:
        await client.aclose()


def cache_for(store: Store, **env: str) -> ReferralCache:
    return services.cache_for(make_settings(**env), store)


async def lookups_sent(store: Store, count: int) -> None:
    """Wait until ``count`` Redis calls are sent (at once on memory, where a lookup never
    awaits), then a little longer, so that every waiting read has found the leader's lease
    before the leader goes on, however busy the machine."""
    deadline = asyncio.get_running_loop().time() + 10
    while store.redis is not None and store.redis_calls < count:
        assert asyncio.get_running_loop().time() < deadline, "the lookups never reached Redis"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)


async def test_miss_stores_then_hits_with_the_same_bytes(store: Store) -> None:
    """A miss loads and stores; the next read is a hit returning exactly the loaded bytes."""
    cache = cache_for(store)
    upstream = Upstream()
    first = await cache.read(key(), upstream, limit=None)
    second = await cache.read(key(), upstream, limit=None)
    assert (first.outcome, first.cache_status) == ("miss", "broker; fwd=miss; stored")
    assert second.outcome == "hit"
    assert re.fullmatch(r"broker; hit; ttl=(5[3-9]|60)", second.cache_status)
    assert first.body == second.body == BODY
    assert upstream.calls == 1
    assert first.rate is None


async def test_fifty_concurrent_cold_reads_load_once(store: Store) -> None:
    """Fifty simultaneous misses for one key make one upstream call and all get its body."""
    cache = cache_for(store)
    gate = asyncio.Event()
    upstream = Upstream(gate=gate)
    reads = [asyncio.create_task(cache.read(key(), upstream, limit=None)) for _ in range(50)]
    await upstream.started.wait()
    await lookups_sent(store, 50)
    gate.set()
    served = await asyncio.gather(*reads)
    assert upstream.calls == 1
    assert {s.body for s in served} == {BODY}
    outcomes = [s.outcome for s in served]
    # One leader; the others waited on it, or (a lookup that reached Redis only after the leader
    # stored, on a busy machine) found its entry.
    assert outcomes.count("miss") == 1
    assert set(outcomes) - {"miss"} <= {"collapsed", "hit"} and "collapsed" in outcomes
    for s in served:
        assert CACHE_STATUS_RE.match(s.cache_status), s.cache_status


async def test_collapse_spans_two_stores_on_one_redis(redis_session: RedisProcess) -> None:
    """A miss in one process waits for another process's upstream call instead of making its own."""
    await flush(redis_session.url)
    settings = make_settings(REDIS_URL=redis_session.url)
    first, second = await open_store(settings), await open_store(settings)
    try:
        gate = asyncio.Event()
        upstream = Upstream(gate=gate)
        leader = asyncio.create_task(cache_for(first).read(key(), upstream, limit=None))
        await upstream.started.wait()
        follower = asyncio.create_task(cache_for(second).read(key(), upstream, limit=None))
        await asyncio.sleep(0.1)
        gate.set()
        led, followed = await leader, await follower
        assert upstream.calls == 1
        assert led.outcome == "miss"
        assert (followed.outcome, followed.cache_status) == (
            "collapsed",
            "broker; fwd=miss; collapsed",
        )
        assert followed.body == BODY
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_waiter_answers_within_its_budget_when_the_leader_hangs(
    redis_session: RedisProcess,
) -> None:
    """A collapsed read whose leader (another process) hangs answers 504 once its budget (the
    upstream timeout) is spent, without a second call of its own; the next read after the
    leader's lease expires loads."""
    await flush(redis_session.url)
    settings = make_settings(REDIS_URL=redis_session.url, BROKER_UPSTREAM_TIMEOUT="0.1")
    first, second = await open_store(settings), await open_store(settings)
    try:
        hung = Upstream(gate=asyncio.Event())
        leader = asyncio.create_task(
            services.cache_for(settings, first).read(key(), hung, limit=None)
        )
        await hung.started.wait()
        own = Upstream(b'{"own": true}')
        waiter = services.cache_for(settings, second)
        began = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await waiter.read(key(), own, limit=None)
        assert time.monotonic() - began < 1.0 and own.calls == 0
        await asyncio.sleep(1.2)  # the hung leader's lease (timeout + 1 s) runs out
        served = await waiter.read(key(), own, limit=None)
        assert own.calls == 1
        assert served.body == b'{"own": true}'
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
    finally:
        await first.aclose()
        await second.aclose()


async def test_read_started_before_a_send_does_not_store(store: Store) -> None:
    """A load that overlaps invalidate() answers its caller but is not stored (read-your-writes)."""
    cache = cache_for(store)
    gate = asyncio.Event()
    before = Upstream(b'{"referrals": []}', gate=gate)
    slow = asyncio.create_task(cache.read(key(), before, limit=None))
    await before.started.wait()
    await cache.invalidate(SHOP, "alice")
    gate.set()
    served = await slow
    assert served.body == b'{"referrals": []}'
    assert served.cache_status == "broker; fwd=miss"
    after = Upstream(b'{"referrals": ["new"]}')
    fresh = await cache.read(key(), after, limit=None)
    assert after.calls == 1
    assert fresh.body == b'{"referrals": ["new"]}'
    assert fresh.cache_status == "broker; fwd=miss; stored"


async def test_read_after_a_send_never_joins_an_older_fetch(store: Store) -> None:
    """A read begun after invalidate() loads for itself rather than wait on a pre-send load."""
    cache = cache_for(store)
    gate = asyncio.Event()
    before = Upstream(b'{"referrals": []}', gate=gate)
    slow = asyncio.create_task(cache.read(key(), before, limit=None))
    await before.started.wait()
    await cache.invalidate(SHOP, "alice")
    after = Upstream(b'{"referrals": ["new"]}')
    served = await cache.read(key(), after, limit=None)
    assert served.body == b'{"referrals": ["new"]}'
    assert served.outcome == "miss"
    gate.set()
    await slow
    again = await cache.read(key(), Upstream(b"never"), limit=None)
    assert again.body == b'{"referrals": ["new"]}'


# A second cached function beside CustomerReferrals2, as a third Bubblehouse function would be.
SUMMARY = "CustomerSummary2"


def two_function_cache(store: Store, versions: tuple[str, ...] = (VERSION,)) -> ReferralCache:
    """A cache holding two functions' answers, wired as services.cache_for wires one."""
    settings = make_settings(BROKER_API_VERSIONS=",".join(versions))
    entries = [(f, v) for f in (READ.name, SUMMARY) for v in versions]
    return ReferralCache(store, Lifetimes.of(settings), entries)


async def test_invalidate_drops_every_function_and_version(store: Store) -> None:
    """invalidate() empties all of the customer's entries and no other customer's."""
    cache = two_function_cache(store, ("v2023061", "v2024010"))
    variants = [
        key(version=v, function=f) for v in ("v2023061", "v2024010") for f in (READ.name, SUMMARY)
    ]
    for variant in [*variants, key("bob")]:
        await cache.read(variant, Upstream(), limit=None)
    await cache.invalidate(SHOP, "alice")
    for variant in variants:
        upstream = Upstream()
        assert (await cache.read(variant, upstream, limit=None)).outcome == "miss"
        assert upstream.calls == 1
    assert (await cache.read(key("bob"), Upstream(), limit=None)).outcome == "hit"


async def test_customers_and_functions_never_mix(store: Store) -> None:
    """Entries are kept apart per customer and per function."""
    cache = two_function_cache(store)
    for customer in ("alice", "bob"):
        for function in (READ.name, SUMMARY):
            body = f'{{"c": "{customer}", "f": "{function}"}}'.encode()
            await cache.read(key(customer, function=function), Upstream(body), limit=None)
    for customer in ("alice", "bob"):
        for function in (READ.name, SUMMARY):
            served = await cache.read(key(customer, function=function), Upstream(b"x"), limit=None)
            assert served.outcome == "hit"
            assert served.body == f'{{"c": "{customer}", "f": "{function}"}}'.encode()


STALE_OK = [
    UpstreamError(),
    UpstreamTimeout(),
    UpstreamUnavailable(),
    UpstreamRateLimited(3),
]


async def test_stale_is_served_for_each_stale_ok_error_then_backs_off(store: Store) -> None:
    """Past freshness, every stale_ok failure serves the stale body; the back-off skips upstream."""
    cache = cache_for(store, BROKER_CACHE_TTL="1", BROKER_CACHE_STALE_TTL="60")
    customers = [f"c{i}" for i in range(len(STALE_OK))]
    for customer in customers:
        await cache.read(key(customer), Upstream(), limit=None)
    await asyncio.sleep(1.2)
    for customer, error in zip(customers, STALE_OK, strict=True):
        failing = Upstream(error=error)
        served = await cache.read(key(customer), failing, limit=None)
        assert failing.calls == 1
        assert served.outcome == "stale"
        assert served.body == BODY
        assert re.fullmatch(rf"broker; fwd=stale; ttl=-\d+; detail={error.id}", served.cache_status)
        assert CACHE_STATUS_RE.match(served.cache_status)
        again = Upstream()
        during = await cache.read(key(customer), again, limit=None)
        assert again.calls == 0
        assert during.outcome == "stale"
        assert during.cache_status.endswith("detail=backoff")


async def test_stale_is_not_served_past_the_stale_ttl(store: Store) -> None:
    """Once cache_ttl + cache_stale_ttl has passed, an upstream failure is raised."""
    cache = cache_for(store, BROKER_CACHE_TTL="1", BROKER_CACHE_STALE_TTL="1")
    await cache.read(key(), Upstream(), limit=None)
    await asyncio.sleep(2.3)
    with pytest.raises(UpstreamTimeout):
        await cache.read(key(), Upstream(error=UpstreamTimeout()), limit=None)


@pytest.mark.parametrize(
    "error",
    [UpstreamRejected("no_customers_match_customer_identity", 404), UpstreamMisconfigured()],
)
async def test_stale_is_not_served_for_other_errors(store: Store, error: BrokerError) -> None:
    """Errors without stale_ok are raised even when a stale body exists."""
    cache = cache_for(store, BROKER_CACHE_TTL="1", BROKER_CACHE_STALE_TTL="60")
    await cache.read(key(), Upstream(), limit=None)
    await asyncio.sleep(1.2)
    with pytest.raises(type(error)):
        await cache.read(key(), Upstream(error=error), limit=None)


async def test_errors_are_never_cached(store: Store) -> None:
    """A failed load stores nothing: the next read calls upstream again."""
    cache = cache_for(store)
    for error in (UpstreamError(), UpstreamRejected("empty_customer_identity", 400)):
        with pytest.raises(type(error)):
            await cache.read(key(), Upstream(error=error), limit=None)
    upstream = Upstream()
    assert (await cache.read(key(), upstream, limit=None)).outcome == "miss"
    assert upstream.calls == 1


@pytest.mark.parametrize("stall", [0.0, 0.3], ids=["steady loop", "stalled loop"])
async def test_leader_error_reaches_local_waiters_without_more_calls(
    store: Store, stall: float
) -> None:
    """When the one upstream call fails with nothing stale, its collapsed waiters get that error.
    A loop stalled past the waiters' look-again time (a busy machine) runs their timeouts and the
    leader's failure together: they still take its error, and nobody calls again."""
    cache = cache_for(store)
    gate = asyncio.Event()
    failing = Upstream(gate=gate, error=UpstreamRejected("empty_customer_identity", 400))
    reads = [asyncio.create_task(cache.read(key(), failing, limit=None)) for _ in range(5)]
    await failing.started.wait()
    await lookups_sent(store, 5)
    gate.set()
    time.sleep(stall)  # noqa: ASYNC251 - the stall is the point: nothing runs meanwhile
    results = await asyncio.gather(*reads, return_exceptions=True)
    assert all(isinstance(r, UpstreamRejected) for r in results)
    assert failing.calls == 1


async def test_cache_ttl_zero_loads_every_time_and_stores_nothing(
    store: Store, redis_session: RedisProcess
) -> None:
    """BROKER_CACHE_TTL=0: every read loads (outcome bypass) and no entry is written."""
    cache = cache_for(store, BROKER_CACHE_TTL="0")
    upstream = Upstream()
    for _ in range(3):
        served = await cache.read(key(), upstream, limit=RateLimit(10, 60))
        assert (served.outcome, served.cache_status) == ("bypass", "broker; fwd=miss")
        assert served.rate is not None
    assert upstream.calls == 3
    assert served.rate is not None and served.rate.remaining == 7
    if store.redis is not None:
        assert [k for k in await redis_keys(redis_session.url) if ":rl:" not in k] == []
    else:
        assert len(store.memory) == 1  # the read-rate window only


async def test_fresh_lifetimes_are_jittered(store: Store) -> None:
    """Entries live cache_ttl less up to 10% jitter: never longer, and not all expiring together."""
    cache = cache_for(store, BROKER_CACHE_TTL="100")
    ttls = set()
    for i in range(30):
        await cache.read(key(f"c{i}"), Upstream(), limit=None)
        served = await cache.read(key(f"c{i}"), Upstream(), limit=None)
        ttl = int(served.cache_status.rsplit("=", 1)[1])
        assert 89 <= ttl <= 100
        ttls.add(ttl)
    assert len(ttls) > 3


async def test_read_limit_is_counted_and_refuses_before_loading(store: Store) -> None:
    """Reads count the customer's read limit (hits too); over it, nothing else happens."""
    cache = cache_for(store)
    upstream = Upstream()
    limit = RateLimit(2, 30)
    first = await cache.read(key(), upstream, limit=limit)
    second = await cache.read(key(), upstream, limit=limit)
    assert first.rate is not None
    assert second.rate is not None
    assert (first.rate.remaining, second.rate.remaining) == (1, 0)
    assert second.rate.headers()["RateLimit-Policy"] == '"read";q=2;w=30'
    with pytest.raises(RateLimitExceeded) as caught:
        await cache.read(key(), upstream, limit=limit)
    assert caught.value.retry_after >= 1
    assert caught.value.headers()["RateLimit"].startswith('"read";r=0;t=')
    assert upstream.calls == 1
    other = await cache.read(key("bob"), upstream, limit=limit)
    assert other.rate is not None
    assert other.rate.remaining == 1


async def test_a_cached_read_is_one_round_trip(redis_session: RedisProcess) -> None:
    """A hit, read limit included, costs exactly one Redis call (one EVALSHA)."""
    await flush(redis_session.url)
    store = await open_store(make_settings(REDIS_URL=redis_session.url))
    try:
        cache = cache_for(store)
        await cache.read(key(), Upstream(), limit=RateLimit(100, 60))
        before = store.redis_calls
        for _ in range(10):
            served = await cache.read(key(), Upstream(), limit=RateLimit(100, 60))
            assert served.outcome == "hit"
        assert store.redis_calls - before == 10
        client = Redis.from_url(redis_session.url)
        try:
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        assert "cmdstat_eval" not in stats  # every script ran by SHA
    finally:
        await store.aclose()
