"""The referral-list cache: one round trip per read, one upstream call per miss, no stale list
after a send. A read runs one script that counts the read limit, looks the entry up under the
customer's *generation*, and on a miss takes a short lease: the holder loads, everyone else
waits for its entry. :meth:`ReferralCache.invalidate` bumps the generation, and a load stores
only if the generation is still the one its read saw. While Redis is down a list read is kept
in memory 250 ms at most (other processes cannot reach it with their sends), and what Redis
missed (invalidations, leases left there) is replayed on it before it serves again
(:mod:`broker.cache._missed`). A read that waited on a lease answers within one upstream
timeout (:mod:`broker.cache._budget`). Keys: :mod:`broker.store.keys` (an entry: body ``b``,
fresh-until ``f``, generation ``g``); the steps on them: :class:`broker.cache._backends.Entries`.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import structlog

from broker.cache._backends import Entries, Lookup, MemoryEntries, RedisEntries
from broker.cache._budget import within
from broker.cache._missed import Unheard
from broker.cache.near import NearCache
from broker.config.lifetimes import Lifetimes
from broker.config.settings import RateLimit
from broker.errors import BrokerError
from broker.store.keys import EntryKeys, customer_scope, entry_keys, scope_prefix
from broker.store.limits import Decision
from broker.store.store import Store, Twins

log = structlog.get_logger("broker.cache")

Outcome = Literal["hit", "miss", "stale", "collapsed", "bypass"]


@dataclass(frozen=True)
class CacheKey:
    """One cached answer: a function's, at an API version, for one customer of one shop."""

    function: str
    version: str
    shop: str
    customer: str


@dataclass(frozen=True)
class Served:
    """A body to answer with, and how the cache came by it."""

    body: bytes
    cache_status: str  # RFC 9211 Cache-Status field value
    outcome: Outcome
    rate: Decision | None


COLLAPSED = "broker; fwd=miss; collapsed"


class ReferralCache:
    """Customer referral lists in the Store, with the read limit counted in the same trip."""

    def __init__(
        self,
        store: Store,
        lifetimes: Lifetimes,
        entries: Sequence[tuple[str, str]],
        *,
        near: NearCache | None = None,
        limit_policy: str = "read",
        jitter: float = 0.1,
    ) -> None:
        self.store = store
        self.near = near
        self.entries = tuple(entries)  # (function, version) of every cached answer
        self.policy = limit_policy  # the limit the read script counts (strict limits)
        self.ttl_ms, self.stale_ms = lifetimes.fresh_ms, lifetimes.stale_ms
        self.backoff_ms, self.outage_ms = lifetimes.backoff_ms, lifetimes.outage_keep_ms
        self.jitter = jitter
        self.wait_bound = lifetimes.wait_s
        timing = {"lease_ms": lifetimes.lease_ms, "gen_ttl_ms": lifetimes.generation_ms}
        self._entries: Twins[Entries] = store.twins(
            lambda on: RedisEntries(on, **timing), lambda on: MemoryEntries(on, **timing)
        )
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}
        # Lease tokens: unique per process run and per lookup, made without a syscall.
        self._lease_nonce = secrets.token_hex(6)
        self._lease_count = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._unheard = Unheard(lifetimes.lease_ms / 1000, self._customer_keys)
        store.on_recovery(self._replay_missed)

    def _keys(self, key: CacheKey) -> EntryKeys:
        return entry_keys(key.function, key.version, key.shop, key.customer, self.policy)

    def near_hit(self, key: CacheKey, min_gen: int) -> Served | None:
        """The list from the near tier, without a network call, or None (ask :meth:`read`)."""
        near = self.near
        if near is None or not near.live:
            return None
        entry = near.get(self._keys(key).entry, min_gen)
        if entry is None:
            return None
        ttl = int(entry.fresh_until - near.clock())
        return Served(entry.body, f"broker; hit; ttl={ttl}; detail=near", "hit", None)

    async def read(
        self,
        key: CacheKey,
        load: Callable[[], Awaitable[bytes]],
        *,
        limit: RateLimit | None,
        min_gen: int | None = None,
    ) -> Served:
        """The customer's referral list: cached, collapsed, loaded, or stale on upstream failure.

        ``limit`` is counted in Redis in the same round trip (strict limits); raises
        RateLimitExceeded (before anything else happens) when it is used up, and whatever
        ``load`` raises when no stale body may stand in for it. ``min_gen`` is the generation a
        ``Consistency-Token`` asks for: nothing older is served.
        """
        caching = self.ttl_ms > 0
        if caching and (min_gen is not None or limit is None):
            # Nothing to count in Redis (no limit, or counted locally): the near tier may answer.
            served = self.near_hit(key, min_gen or 0)
            if served is not None:
                return served
        if min_gen is not None and caching and self.store.state == "down":
            # Redis is away: another instance may hold an older list; only Bubblehouse knows.
            return Served(await load(), "broker; fwd=miss; detail=consistency", "bypass", None)
        if not caching and limit is None:
            # Nothing to look up and nothing to count in Redis: no round trip at all.
            return Served(await load(), "broker; fwd=miss", "bypass", None)
        keys = self._keys(key)
        epoch = self.store.epoch
        found = await self._lookup(keys, limit, caching)
        decision = None
        if limit is not None:
            decision = Decision.of(self.policy, limit, found.count, found.reset_ms)
            if not found.allowed:
                raise decision.refuse()
        if not caching:
            return Served(await load(), "broker; fwd=miss", "bypass", decision)
        if found.verdict == "hit":
            ttl = found.left_ms // 1000
            body = found.body or b""
            if self.near is not None:
                self.near.put(
                    keys.prefix, keys.entry, body, found.gen, found.left_ms, found.near_epoch
                )
            return Served(body, f"broker; hit; ttl={ttl}", "hit", decision)
        if found.verdict == "backoff":
            served = self._stale(found, 0, "backoff", decision)
            if served is not None:
                return served
        if found.verdict == "wait":
            return await self._wait(keys, load, found, decision)
        return await self._fetch(keys, load, found, epoch, decision)

    async def _fetch(
        self,
        keys: EntryKeys,
        load: Callable[[], Awaitable[bytes]],
        found: Lookup,
        epoch: int,
        decision: Decision | None,
    ) -> Served:
        loop = asyncio.get_running_loop()
        token = found.token if found.verdict == "lead" else ""
        flight = self._flights.get(token) if token else None
        started = loop.time()
        # What local waiters get: the body, the error to share, or None (look again).
        outcome: bytes | BrokerError | None = None
        try:
            body = await load()
            outcome = body
        except BrokerError as exc:
            elapsed = int((loop.time() - started) * 1000)
            served = None
            if exc.stale_ok:
                served = self._stale(found, elapsed, exc.id, decision)
            if served is None and flight is not None:
                self._land(flight, exc)  # local waiters hear it before the lease goes
            await self._release(keys, token, epoch, backoff=served is not None)
            if served is None:
                outcome = exc
                raise
            return served
        except BaseException:
            self._in_background(self._release(keys, token, epoch, backoff=False))
            raise
        finally:
            if flight is not None:
                self._land(flight, outcome)
                self._flights.pop(token, None)
        stored = await self._put(keys, body, found.gen, token, epoch)
        status = "broker; fwd=miss; stored" if stored else "broker; fwd=miss"
        if stored and self.near is not None:
            self.near.put(keys.prefix, keys.entry, body, found.gen, stored, found.near_epoch)
        return Served(body, status, "miss", decision)

    @staticmethod
    def _land(flight: asyncio.Future[bytes | None], outcome: bytes | BrokerError | None) -> None:
        if flight.done():
            return
        if isinstance(outcome, BrokerError):
            flight.set_exception(outcome)
            flight.exception()  # retrieved: nobody waiting is no reason to log it
        else:
            flight.set_result(outcome)

    async def _wait(
        self,
        keys: EntryKeys,
        load: Callable[[], Awaitable[bytes]],
        found: Lookup,
        decision: Decision | None,
    ) -> Served:
        made: list[tuple[str, asyncio.Future[bytes | None]]] = []
        try:
            return await self._wait_for(keys, load, found, decision, made)
        finally:
            for holder, flight in made:
                # Futures made for a holder that had already finished: nobody lands them.
                if not flight.done() and self._flights.get(holder) is flight:
                    del self._flights[holder]

    async def _wait_for(
        self,
        keys: EntryKeys,
        load: Callable[[], Awaitable[bytes]],
        found: Lookup,
        decision: Decision | None,
        made: list[tuple[str, asyncio.Future[bytes | None]]],
    ) -> Served:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_bound
        delay = 0.005
        epoch = self.store.epoch
        # The holder's future this waiter has already looked at: once landed, the holder takes
        # it out of the table, and its outcome still stands (a holder's lease is never reused).
        seen: tuple[str, asyncio.Future[bytes | None]] | None = None
        while (remaining := deadline - loop.time()) > 0:
            flight = self._flights.get(found.holder)
            if flight is None and seen is not None and seen[0] == found.holder:
                flight = seen[1]
                if flight.done() and flight.exception() is None and flight.result() is None:
                    flight = None  # landed with "look again": poll like any other waiter
            if flight is None and found.holder.startswith(self._lease_nonce):
                # The holder is a task of this process whose reply has not been seen yet: make
                # the future it will land (it finds it there), rather than polling Redis.
                flight = self._flights[found.holder] = loop.create_future()
                made.append((found.holder, flight))
            if flight is not None:
                # The lease holder is a task of this process: wait on it, not on Redis.
                seen = (found.holder, flight)
                try:
                    # A short look at a time: a holder that finished before the future was made
                    # never lands it, and by then its entry is in the store.
                    async with asyncio.timeout(min(remaining, 0.1)):
                        body = await asyncio.shield(flight)
                except TimeoutError:
                    # A stalled loop may run the timeout and the landing together: the landed
                    # outcome wins (result() raises the leader's error, if that is what landed).
                    body = flight.result() if flight.done() else None
                if body is not None:
                    return Served(body, COLLAPSED, "collapsed", decision)
            else:
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.05)
            epoch = self.store.epoch
            found = await self._lookup(keys, None, True)
            if found.verdict == "hit":
                return Served(found.body or b"", COLLAPSED, "collapsed", decision)
            if found.verdict == "backoff" and (
                served := self._stale(found, 0, "backoff", decision)
            ):
                return served
            if found.verdict == "lead":
                return await self._fetch(keys, within(load, deadline), found, epoch, decision)
        # The wait took the whole budget (the leader hangs, or its process is gone): stale, or
        # 504 now, never a second upstream timeout on top (the lease frees for the next read).
        bounded = within(load, deadline)
        return await self._fetch(keys, bounded, replace(found, verdict="miss"), epoch, decision)

    def _stale(
        self, found: Lookup, elapsed_ms: int, why: str, decision: Decision | None
    ) -> Served | None:
        if found.body is None or found.left_ms - elapsed_ms < -self.stale_ms:
            return None
        ttl = math.floor((found.left_ms - elapsed_ms) / 1000)
        status = f"broker; fwd=stale; ttl={ttl}; detail={why}"
        return Served(found.body, status, "stale", decision)

    async def _lookup(self, keys: EntryKeys, limit: RateLimit | None, caching: bool) -> Lookup:
        """Count the read, look the entry up, and on a miss try to take the lease."""
        quota = limit.limit if limit is not None else 0
        window_ms = limit.window * 1000 if limit is not None else 0
        token = ""
        if caching:
            self._lease_count += 1
            token = f"{self._lease_nonce}{self._lease_count:x}"

        near_epoch = self.near.epoch if self.near is not None else 0
        found = await self.store.run(
            self._entries,
            lambda entries: entries.lookup(keys, quota, window_ms, token, caching),
            op="cache_read",
            keys=keys.all,
        )
        if near_epoch:
            found = replace(found, near_epoch=near_epoch)
        if found.verdict == "lead" and token not in self._flights:
            # Local readers that find this lease held wait on this future instead of polling
            # Redis (one that looked before it existed polls, which is slower, never wrong).
            self._flights[token] = asyncio.get_running_loop().create_future()
        return found

    async def _put(self, keys: EntryKeys, body: bytes, gen: int, token: str, epoch: int) -> int:
        """Store ``body`` if the generation is still ``gen``: its freshness in ms (shortened a
        little at random, so a fleet of keys expires spread out), or 0."""
        fresh_ms = int(self.ttl_ms * (1 - random.uniform(0, self.jitter)))  # noqa: S311 - spread, not secrecy
        keep_ms = fresh_ms + self.stale_ms

        async def put(entries: Entries) -> int:
            if self.store.epoch != epoch:
                self._orphaned(entries, keys, token)
                await entries.release(keys, token, 0)  # seen on the other backend: free the lease
                return 0
            fresh, keep = fresh_ms, keep_ms
            if not entries.shared and self.store.redis is not None:
                # Read while Redis is down: other processes' sends cannot reach this copy.
                fresh = keep = min(fresh_ms, self.outage_ms)
            stored = await entries.put(keys, body, gen, fresh, keep, token)
            return fresh if stored else 0

        keys_touched = [keys.entry, keys.lease, keys.backoff]
        return await self.store.run(self._entries, put, op="cache_store", keys=keys_touched)

    async def _release(self, keys: EntryKeys, token: str, epoch: int, *, backoff: bool) -> None:
        backoff_ms = self.backoff_ms if backoff else 0
        if not token and not backoff_ms:
            return

        async def release(entries: Entries) -> None:
            if self.store.epoch != epoch:
                self._orphaned(entries, keys, token)
            await entries.release(keys, token, backoff_ms)

        await self.store.run(self._entries, release, op="cache_release")

    def _orphaned(self, entries: Entries, keys: EntryKeys, token: str) -> None:
        """Redis went away between taking the lease and giving it up (the epoch moved), so the
        lease may still stand there: give it up there too once Redis is back."""
        if token and not entries.shared:
            self._unheard.orphaned(keys, token)

    def _in_background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _customer_keys(self, shop: str, customer: str) -> tuple[str, list[str]]:
        variants = [
            self._keys(CacheKey(function, version, shop, customer))
            for function, version in self.entries
        ]
        doomed = [k.entry for k in variants] + [k.lease for k in variants]
        return variants[0].gen, doomed

    async def invalidate(self, shop: str, customer: str) -> str:
        """Forget the customer's cached answers (every function and version, in every process
        sharing the Redis) and make reads already in flight unable to store what they
        load. Returns the ``Consistency-Token`` of this invalidation."""
        gen, doomed = self._customer_keys(shop, customer)
        prefix = scope_prefix(customer_scope(shop, customer))
        if self.near is not None:
            self.near.drop(prefix)  # at once: this process never serves the old list again

        async def invalidate(entries: Entries) -> str:
            new = await entries.invalidate(gen, doomed, prefix)
            if entries.shared:
                if self.near is not None:
                    self.near.drop(prefix, new)
                return str(new)
            if self.store.redis is None:
                return str(new)
            self._unheard.invalidated(shop, customer)
            return "x"  # Redis never heard of this send: the next read asks Bubblehouse

        return await self.store.run(self._entries, invalidate, op="cache_invalidate", keys=doomed)

    async def _replay_missed(self) -> bool:
        """Redis is back: write to it what it did not hear while it was away."""
        assert self._entries.redis is not None  # only Redis recovers
        return await self._unheard.replay(self._entries.redis)
