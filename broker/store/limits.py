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
  request. A process that meets a scope's window for the first time (or after it stopped
  following it) counts that request in Redis and reads the shared count before deciding (one
  round trip), so a fresh process or instance never grants a new allowance.

Both count through :class:`~broker.store.counters.Counters`, in Redis or in process memory.

Answers carry the IETF httpapi ``RateLimit-Policy`` and ``RateLimit`` fields
(draft-ietf-httpapi-ratelimit-headers, structured-field syntax).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from broker.config.settings import RateLimit
from broker.errors import RateLimitExceeded
from broker.store import keys
from broker.store.counters import COUNT_LUA, Count, Counters, counters
from broker.store.store import Store

__all__ = ["COUNT_LUA", "Count", "Counters", "Decision", "Limiter", "Limits", "LocalLimits"]
__all__ += ["counters"]

log = structlog.get_logger("broker.limits")


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

    def hit(self, policy: str, prefix: str, limit: RateLimit) -> Decision | None:
        """Count one request of the scope whose key prefix is ``prefix``; 429 when over. None
        (nothing counted) for a window this process meets for the first time, or has stopped
        following, while Redis is up: :meth:`first` counts it once the shared count is read."""
        key = keys.rate(prefix, policy)
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now >= window.ends:
            if self.store.state == "up" and key not in self._active and key not in self._dirty:
                return None
            window = self._open(key, now, limit)
        window.pending += 1
        window.touched = now
        self._dirty[key] = window
        return self._decide(policy, limit, window, now)

    async def first(self, policy: str, prefix: str, limit: RateLimit) -> Decision:
        """Count one request of a window met for the first time in Redis, in one round trip,
        learning the shared count before deciding: a fresh process grants no new allowance."""
        key, window_ms = keys.rate(prefix, policy), limit.window * 1000
        shared = await self.store.run(
            self._counters, lambda on: on.sync({key: (1, window_ms)}), op="limit_first"
        )
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now >= window.ends:
            window = self._open(key, now, limit)
        window.touched = now
        if shared:
            window.known = max(window.known, shared[0].count)
            window.ends = now + shared[0].reset_ms / 1000
            self._active[key] = window  # followed from now on (its count relearned)
        else:
            window.pending += 1  # Redis went away meanwhile: counted here alone
            self._dirty[key] = window
        return self._decide(policy, limit, window, now)

    def _open(self, key: str, now: float, limit: RateLimit) -> _Window:
        if len(self._windows) >= self.max_scopes:
            self._forget_ended(now)
        window = self._windows[key] = _Window(now + limit.window, limit.window * 1000)
        return window

    @staticmethod
    def _decide(policy: str, limit: RateLimit, window: _Window, now: float) -> Decision:
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
                prefix = keys.scope_prefix(scope)
                decided = self.local.hit(policy, prefix, limit)  # no await: the hot path
                if decided is None:
                    decided = await self.local.first(policy, prefix, limit)
                return decided
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
