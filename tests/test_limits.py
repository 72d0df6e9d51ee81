"""Rate limits: counting, headers, refusal, sharing through Redis, window rollover."""

from __future__ import annotations

import asyncio
import re

import pytest

from broker.errors import RateLimitExceeded
from broker.limits import Decision, Limiter
from broker.settings import RateLimit
from broker.store import Store, open_store
from tests.conftest import flush, make_settings
from tests.servers import RedisProcess

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
    assert await limiter.check("issuer", "scope", None) is None


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


async def test_check_refuses_without_counting(store: Store) -> None:
    """check() never counts, and refuses once hits have used the window up."""
    limiter = Limiter(store)
    limit = RateLimit(2, 30)
    for _ in range(5):
        decision = await limiter.check("issuer", "203.0.113.9", limit)
        assert decision is not None
        assert decision.remaining == 2
    await limiter.hit("issuer", "203.0.113.9", limit)
    await limiter.hit("issuer", "203.0.113.9", limit)
    with pytest.raises(RateLimitExceeded) as caught:
        await limiter.check("issuer", "203.0.113.9", limit)
    assert caught.value.retry_after >= 1
    await limiter.clear("issuer", "203.0.113.9")
    assert await limiter.check("issuer", "203.0.113.9", limit) is not None


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
            await Limiter(first).check("write", "shop/alice", limit)
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
