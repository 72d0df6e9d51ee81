"""Rate limits shared through the Store: fixed windows that open at a scope's first request.

A window of ``w`` seconds opens at the first counted request and allows ``q`` requests; the
counter and its expiry change in one script, so every process and instance sharing the Redis
sees the same count. Answers carry the IETF httpapi ``RateLimit-Policy`` and ``RateLimit``
fields (draft-ietf-httpapi-ratelimit-headers, structured-field syntax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from broker.errors import RateLimitExceeded
from broker.settings import RateLimit
from broker.store import Memory, Store, scope_prefix

# Shared with the cache's read script, which counts the read limit in the same round trip.
# Expects `rate_key` and `window`, and declared locals `count` and `reset`, which it sets (reset:
# ms until the window ends).
COUNT_LUA = """
count = redis.call('INCR', rate_key)
reset = redis.call('PTTL', rate_key)
if reset < 0 then
  redis.call('PEXPIRE', rate_key, window)
  reset = window
end
"""

HIT_LUA = f"""
local rate_key, window = KEYS[1], tonumber(ARGV[1])
local count, reset = 0, 0
{COUNT_LUA}
return {{count, reset}}
"""

PEEK_LUA = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
return {count, redis.call('PTTL', KEYS[1])}
"""


def rate_key(prefix: str, policy: str) -> str:
    return f"{prefix}:rl:{policy}"


@dataclass(frozen=True)
class Decision:
    """The outcome of counting one request against a policy."""

    limit: RateLimit
    remaining: int
    reset: int  # seconds until the window frees capacity
    policy: str = "default"  # the name in the headers: "read", "write" or "issuer"

    @classmethod
    def of(cls, policy: str, limit: RateLimit, count: int, reset_ms: int) -> Decision:
        reset = math.ceil(reset_ms / 1000) if reset_ms > 0 else 0
        return cls(limit, max(0, limit.limit - count), reset, policy)

    @property
    def exceeded(self) -> bool:
        return self.remaining <= 0

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit.limit};w={self.limit.window}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset}',
        }

    def refuse(self) -> RateLimitExceeded:
        return RateLimitExceeded(max(1, self.reset), rate_headers=self.headers())


def memory_hit(memory: Memory, key: str, window_ms: int) -> tuple[int, int]:
    return memory.incr(key, window_ms)


def memory_peek(memory: Memory, key: str) -> tuple[int, int]:
    return int(memory.get(key) or 0), memory.pttl(key)


class Limiter:
    """Counts requests per (policy, scope); raises :class:`RateLimitExceeded` when over."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _key(self, policy: str, scope: str) -> str:
        return rate_key(scope_prefix(scope), policy)

    async def hit(self, policy: str, key: str, limit: RateLimit | None) -> Decision | None:
        """Count one request; None when the limit is disabled."""
        if limit is None:
            return None
        rkey, window_ms = self._key(policy, key), limit.window * 1000

        async def on_redis() -> tuple[int, int]:
            count, reset = await self.store.script(HIT_LUA)(keys=[rkey], args=[window_ms])
            return int(count), int(reset)

        count, reset = await self.store.run(
            on_redis, lambda memory: memory_hit(memory, rkey, window_ms), op="limit_hit"
        )
        decision = Decision.of(policy, limit, count, reset)
        if count > limit.limit:
            raise decision.refuse()
        return decision

    async def peek(self, policy: str, key: str, limit: RateLimit | None) -> Decision | None:
        """The current state without counting."""
        if limit is None:
            return None
        rkey = self._key(policy, key)

        async def on_redis() -> tuple[int, int]:
            count, reset = await self.store.script(PEEK_LUA)(keys=[rkey])
            return int(count), int(reset)

        count, reset = await self.store.run(
            on_redis, lambda memory: memory_peek(memory, rkey), op="limit_peek"
        )
        return Decision.of(policy, limit, count, reset)

    async def check(self, policy: str, key: str, limit: RateLimit | None) -> Decision | None:
        """Refuse a scope whose window is used up, without counting this request."""
        decision = await self.peek(policy, key, limit)
        if decision is not None and decision.exceeded:
            raise decision.refuse()
        return decision

    async def clear(self, policy: str, key: str) -> None:
        """Forget the scope's count (e.g. after a success that forgives earlier failures)."""
        rkey = self._key(policy, key)

        async def on_redis() -> None:
            assert self.store.redis is not None
            await self.store.redis.delete(rkey)

        await self.store.run(on_redis, lambda memory: memory.delete(rkey), op="limit_clear")
