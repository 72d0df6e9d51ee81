"""Rate limits shared through the Store: fixed windows that open at a scope's first request.

A window of ``w`` seconds opens at the first counted request and allows ``q`` requests. Two
ways of sharing the count between processes and instances:

- **strict** (:class:`Limiter`): every request is counted in Redis; the counter and its expiry
  change in one script, so every process sees the same count at once. Costs a round trip.
- **synchronised** (:class:`LocalLimits`, Kong's ``sync_rate``): each process decides on its
  own counters and pushes what it counted to Redis every ``interval`` seconds, in one round trip
  for all scopes, learning the shared count (and the shared window's end) in the reply. Between
  two pushes a process does not see what the others counted, so a scope can be served at most
  ``instances x interval x its request rate`` requests over its limit (per worker process, an
  instance being a process), and every process's view converges within one interval of its last
  request.

Answers carry the IETF httpapi ``RateLimit-Policy`` and ``RateLimit`` fields
(draft-ietf-httpapi-ratelimit-headers, structured-field syntax).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from redis.asyncio.cluster import RedisCluster

from broker.errors import RateLimitExceeded
from broker.settings import RateLimit
from broker.store import Memory, Store, scope_prefix

log = structlog.get_logger("broker.limits")

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

# KEYS: counters. ARGV: window ms, then one count per key.
# Replies, per key: the shared count, ms left in its window, 1 when the counter was repaired.
SYNC_LUA = """
local window, out = tonumber(ARGV[1]), {}
for i, key in ipairs(KEYS) do
  local count = redis.pcall('INCRBY', key, ARGV[i + 1])
  local repaired = 0
  if type(count) == 'table' then
    -- One bad counter (not a number, another type): repaired alone, the others untouched.
    redis.call('DEL', key)
    count = redis.call('INCRBY', key, ARGV[i + 1])
    repaired = 1
  end
  local left = redis.call('PTTL', key)
  if left < 0 then
    redis.call('PEXPIRE', key, window)
    left = window
  end
  out[#out + 1] = count
  out[#out + 1] = left
  out[#out + 1] = repaired
end
return out
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


class _Window:
    """One scope's window as this process sees it."""

    __slots__ = ("ends", "known", "pending", "sending", "touched", "window_ms")

    def __init__(self, ends: float, window_ms: int) -> None:
        self.ends = ends
        self.touched = 0.0  # when this process last counted in it
        self.window_ms = window_ms
        self.known = 0  # the shared count at the last push (ours included)
        self.pending = 0  # counted here since then
        self.sending = 0  # counted here, on its way to Redis


class LocalLimits:
    """Limits decided in process, synchronised with Redis every ``interval`` seconds.

    :meth:`hit` never awaits. :meth:`run` (a background task) pushes the counts. With the
    in-process store (no Redis) or while Redis is down, the local counters are the whole truth.
    """

    def __init__(
        self,
        store: Store,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_scopes: int = 200_000,
        follow: float = 2.0,
    ) -> None:
        self.store = store
        self.interval = interval
        self.clock = clock
        self.max_scopes = max_scopes
        self.follow = follow
        self.syncs = 0
        self._windows: dict[str, _Window] = {}
        self._dirty: dict[str, _Window] = {}
        # Windows used here lately: pushed (with nothing to add) so their shared count is
        # relearned every interval, which keeps this process's view converged.
        self._active: dict[str, _Window] = {}

    def hit(self, policy: str, prefix: str, limit: RateLimit) -> Decision:
        """Count one request of the scope whose key prefix is ``prefix``; 429 when over."""
        key = rate_key(prefix, policy)
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now >= window.ends:
            if len(self._windows) >= self.max_scopes:
                self._forget_ended(now)
            window = self._windows[key] = _Window(now + limit.window, limit.window * 1000)
        window.pending += 1
        window.touched = now
        self._dirty[key] = window
        count = window.known + window.pending + window.sending
        decision = Decision.of(policy, limit, count, int((window.ends - now) * 1000))
        if count > limit.limit:
            raise decision.refuse()
        return decision

    def _forget_ended(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if now >= w.ends]:
            del self._windows[key]
        if len(self._windows) >= self.max_scopes:
            self._windows.clear()  # never unbounded; the next push relearns the shared counts

    async def run(self) -> None:
        """Push the counts every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync()
            except Exception as exc:  # the loop must outlive any surprise
                log.error("limits.sync_failed", error=type(exc).__name__)

    async def sync(self) -> None:
        """One push of everything counted since the last one."""
        now = self.clock()
        self._active.update(self._dirty)
        for key in [k for k, w in self._active.items() if now - w.touched > self.follow]:
            del self._active[key]
        if not self._active or self.store.redis is None:
            self._dirty.clear()
            return
        batch = dict(self._active)
        self._dirty = {}
        for window in batch.values():
            window.sending, window.pending = window.pending, 0
        keys = list(batch)
        client = self.store.redis
        groups: list[list[str]] = [keys]
        if isinstance(client, RedisCluster):
            # A script's keys must share a slot: one script per slot, sent together.
            by_slot: dict[int, list[str]] = {}
            for key in keys:
                by_slot.setdefault(client.keyslot(key), []).append(key)
            groups = list(by_slot.values())

        async def on_redis() -> list[tuple[str, int, int]]:
            script = self.store.script(SYNC_LUA)
            replies = await asyncio.gather(
                *(
                    script(
                        keys=group,
                        args=[batch[group[0]].window_ms, *(batch[k].sending for k in group)],
                    )
                    for group in groups
                )
            )
            answers = [
                (key, int(reply[3 * i]), int(reply[3 * i + 1]), int(reply[3 * i + 2]))
                for group, reply in zip(groups, replies, strict=True)
                for i, key in enumerate(group)
            ]
            if any(repaired for *_, repaired in answers):
                self.store.key_repaired("limit_sync", "counter")
            return [(key, count, left) for key, count, left, _ in answers]

        def on_memory(memory: Memory) -> list[tuple[str, int, int]]:
            return []  # Redis is away: the local counts stand alone

        # No blanket repair: the script repairs a bad counter itself, one key at a time.
        answers = await self.store.run(on_redis, on_memory, op="limit_sync")
        now = self.clock()
        self.syncs += 1
        learned = {key: (count, left) for key, count, left in answers}
        for key, window in batch.items():
            sent, window.sending = window.sending, 0
            if key in learned:
                count, left = learned[key]
                window.known = count
                window.ends = now + left / 1000
            else:
                window.known += sent
