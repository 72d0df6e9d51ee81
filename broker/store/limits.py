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

Both count through :class:`Counters`, in Redis or, without it, in process memory.

Answers carry the IETF httpapi ``RateLimit-Policy`` and ``RateLimit`` fields
(draft-ietf-httpapi-ratelimit-headers, structured-field syntax).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog
from redis.asyncio.cluster import RedisCluster

from broker.config.settings import RateLimit
from broker.errors import RateLimitExceeded
from broker.store import keys
from broker.store.memory import Memory
from broker.store.scripts import decode
from broker.store.store import Store, Twins

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

# KEYS: counter. ARGV: window ms. Replies (a Count): count, reset_ms.
HIT_LUA = f"""
local rate_key, window = KEYS[1], tonumber(ARGV[1])
local count, reset = 0, 0
{COUNT_LUA}
return {{'count', count, 'reset_ms', reset}}
"""

# KEYS: counters. ARGV: per key, the count to add and its window ms.
# Replies: per key, a Count: key, count (the shared count), reset_ms, repaired (when the counter
# held something else than a number).
SYNC_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local add, window = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local reply = {'key', key}
  local count = redis.pcall('INCRBY', key, add)
  if type(count) == 'table' then
    -- One bad counter (not a number, another type): repaired alone, the others untouched.
    redis.call('DEL', key)
    count = redis.call('INCRBY', key, add)
    reply[#reply + 1] = 'repaired'
    reply[#reply + 1] = 1
  end
  local left = redis.call('PTTL', key)
  if left < 0 then
    redis.call('PEXPIRE', key, window)
    left = window
  end
  reply[#reply + 1] = 'count'
  reply[#reply + 1] = count
  reply[#reply + 1] = 'reset_ms'
  reply[#reply + 1] = left
  out[i] = reply
end
return out
"""


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

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit.limit};w={self.limit.window}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset}',
        }

    def refuse(self) -> RateLimitExceeded:
        return RateLimitExceeded(max(1, self.reset), rate_headers=self.headers())


@dataclass(frozen=True, slots=True)
class Count:
    """A counter after counting: its count and the ms left in its window."""

    count: int
    reset_ms: int
    key: str = ""  # in a sync's reply: whose count this is
    repaired: bool = False  # in a sync's reply: the counter held garbage and was started over


class Counters(Protocol):
    """Window counters on one backend; each call is atomic (one script, or no await)."""

    @property
    def shared(self) -> bool: ...

    async def hit(self, key: str, window_ms: int) -> Count:
        """Count one in the window of ``key`` (opened, ``window_ms`` long, at its first count)."""
        ...

    async def sync(self, counts: Mapping[str, tuple[int, int]]) -> list[Count]:
        """Add counts (key -> (count, window ms)) to the shared counters: what they hold now,
        or nothing when there is nothing to share them with."""
        ...


class RedisCounters:
    """Counters in Redis, shared by every process on it."""

    shared = True

    def __init__(self, store: Store) -> None:
        self.store = store
        self._hit = store.script(HIT_LUA)
        self._sync = store.script(SYNC_LUA)

    async def hit(self, key: str, window_ms: int) -> Count:
        return decode(Count, await self._hit(keys=[key], args=[window_ms]))

    async def sync(self, counts: Mapping[str, tuple[int, int]]) -> list[Count]:
        client = self.store.redis
        groups: list[list[str]] = [list(counts)]
        if isinstance(client, RedisCluster):
            # A script's keys must share a slot: one script per slot, sent together.
            by_slot: dict[int, list[str]] = {}
            for key in counts:
                by_slot.setdefault(client.keyslot(key), []).append(key)
            groups = list(by_slot.values())
        replies = await asyncio.gather(
            *(
                self._sync(keys=group, args=[n for key in group for n in counts[key]])
                for group in groups
            )
        )
        shared = [decode(Count, item) for reply in replies for item in reply]
        if any(count.repaired for count in shared):
            self.store.key_repaired("limit_sync", "counter")
        return shared


class MemoryCounters:
    """Counters in process memory, this process's alone."""

    shared = False

    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    async def hit(self, key: str, window_ms: int) -> Count:
        count, reset_ms = self.memory.incr(key, window_ms)
        return Count(count, reset_ms)

    async def sync(self, counts: Mapping[str, tuple[int, int]]) -> list[Count]:
        # Nothing to share with (or Redis away): the local counts stand alone. Learning from
        # memory would forget what was learnt from Redis before it went away.
        return []


def counters(store: Store) -> Twins[Counters]:
    """The counters of ``store``: in its Redis when it has one, and in its memory."""
    return store.twins(RedisCounters, MemoryCounters)


class Limiter:
    """Counts requests per (policy, scope); raises :class:`RateLimitExceeded` when over."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._counters = counters(store)

    async def hit(self, policy: str, key: str, limit: RateLimit | None) -> Decision | None:
        """Count one request; None when the limit is disabled."""
        if limit is None:
            return None
        rkey, window_ms = keys.rate(keys.scope_prefix(key), policy), limit.window * 1000
        counted = await self.store.run(
            self._counters, lambda on: on.hit(rkey, window_ms), op="limit_hit", keys=[rkey]
        )
        decision = Decision.of(policy, limit, counted.count, counted.reset_ms)
        if counted.count > limit.limit:
            raise decision.refuse()
        return decision


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
        self._counters = counters(store)
        self.syncs = 0
        self._windows: dict[str, _Window] = {}
        self._dirty: dict[str, _Window] = {}
        # Windows used here lately: pushed (with nothing to add) so their shared count is
        # relearned every interval, which keeps this process's view converged.
        self._active: dict[str, _Window] = {}

    def hit(self, policy: str, prefix: str, limit: RateLimit) -> Decision:
        """Count one request of the scope whose key prefix is ``prefix``; 429 when over."""
        key = keys.rate(prefix, policy)
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
        counts = {key: (window.sending, window.window_ms) for key, window in batch.items()}
        # No blanket repair: the script repairs a bad counter itself, one key at a time.
        shared = await self.store.run(self._counters, lambda on: on.sync(counts), op="limit_sync")
        now = self.clock()
        self.syncs += 1
        learned = {count.key: (count.count, count.reset_ms) for count in shared}
        for key, window in batch.items():
            sent, window.sending = window.sending, 0
            if key in learned:
                count, left = learned[key]
                window.known = count
                window.ends = now + left / 1000
            else:
                window.known += sent


class Limits:
    """The broker's rate limits behind one call: :meth:`hit` ``(policy, scope)``.

    Each policy's limit comes from the settings (None: off). In synchronised mode (``local``)
    a hit is decided in process; in strict mode it is counted in Redis. Every refusal of the
    broker's own limits is counted by ``refused`` (the metric), here and nowhere else. A strict
    read is counted by the cache's own script, in the same round trip as the lookup:
    :meth:`in_script` hands the cache that limit, and the cache reports a refusal to
    :meth:`refused`.
    """

    def __init__(
        self,
        store: Store,
        policies: Mapping[str, RateLimit | None],
        refused: Callable[[str], None],
        local: LocalLimits | None = None,
    ) -> None:
        self.policies = dict(policies)
        self.strict = Limiter(store)
        self.local = local
        self._refused = refused

    async def hit(self, policy: str, scope: str) -> Decision | None:
        """Count one request of ``scope`` (a customer, or a client address) against
        ``policy``; raises :class:`RateLimitExceeded` when over; None when the limit is off."""
        limit = self.policies[policy]
        if limit is None:
            return None
        try:
            if self.local is not None:
                return self.local.hit(policy, keys.scope_prefix(scope), limit)
            return await self.strict.hit(policy, scope, limit)
        except RateLimitExceeded:
            self._refused(policy)
            raise

    def in_script(self, policy: str) -> RateLimit | None:
        """The limit a caller's own Redis script counts (strict mode), or None when
        :meth:`hit` counts it (synchronised mode) or it is off."""
        return None if self.local is not None else self.policies[policy]

    def refused(self, policy: str) -> None:
        """A script counted by :meth:`in_script` refused a request."""
        self._refused(policy)
