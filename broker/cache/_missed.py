"""What Redis could not hear while it was down, kept in process and replayed when it is back:
the customers invalidated meanwhile, and the leases this process took on Redis but could not
give up there (a leader whose Redis went away mid-call)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import structlog

from broker.cache._backends import Entries
from broker.store.keys import EntryKeys, customer_scope, scope_prefix
from broker.store.store import KEY_FAILURES

log = structlog.get_logger("broker.cache")

T = TypeVar("T", bound=Hashable)


class Missed(Generic[T]):
    """Items to write to Redis when it is back, in order, each once, bounded (past ``limit``,
    ``untracked`` is logged once and the rest are dropped)."""

    def __init__(self, untracked: str, limit: int = 50_000) -> None:
        self.untracked = untracked
        self.limit = limit
        self._items: dict[T, None] = {}
        self._overflow = False

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> None:
        if len(self._items) < self.limit:
            self._items[item] = None
        elif not self._overflow:
            self._overflow = True
            log.warning(self.untracked, tracked=self.limit)

    def first(self) -> T | None:
        """The oldest item still to replay, or None when all are."""
        return next(iter(self._items), None)

    def done(self, item: T) -> None:
        self._items.pop(item, None)
        if not self._items:
            self._overflow = False

    async def replay(self, write: Callable[[T], Awaitable[None]]) -> bool:
        """Run ``write`` on Redis for every item still to replay, oldest first (until none is
        left: items added meanwhile included); True when there was any. A Redis failure stops
        it (the item is kept for the next try); one item's bad key does not."""
        replayed = False
        while (item := self.first()) is not None:
            try:
                await write(item)
            except KEY_FAILURES as exc:
                log.warning("cache.replay_failed", error=type(exc).__name__)
            self.done(item)
            replayed = True
        return replayed


class Unheard:
    """What one cache could not tell Redis while it was down: the customers it invalidated, and
    the leases it took on Redis but gave up in memory (a leader whose Redis went away mid-call,
    whose lease readers in other processes still wait on). Both are written to Redis when it is
    back, before it serves again."""

    def __init__(
        self, lease_s: float, customer_keys: Callable[[str, str], tuple[str, list[str]]]
    ) -> None:
        self.lease_s = lease_s
        self.customer_keys = customer_keys  # a customer's generation key and doomed keys
        self.customers: Missed[tuple[str, str]] = Missed("cache.invalidations_untracked")
        self.leases: Missed[tuple[EntryKeys, str, float]] = Missed(
            "cache.leases_untracked", limit=10_000
        )

    def invalidated(self, shop: str, customer: str) -> None:
        self.customers.add((shop, customer))

    def orphaned(self, keys: EntryKeys, token: str) -> None:
        self.leases.add((keys, token, time.monotonic() + self.lease_s))

    async def replay(self, redis: Entries) -> bool:
        """Invalidate the customers on ``redis``, then give the leases up there (a token that is
        not there, or no longer holds its lease, changes nothing); True when there was any."""

        async def invalidate(customer: tuple[str, str]) -> None:
            gen, doomed = self.customer_keys(*customer)
            await redis.invalidate(gen, doomed, scope_prefix(customer_scope(*customer)))

        async def release(orphan: tuple[EntryKeys, str, float]) -> None:
            keys, token, until = orphan
            if time.monotonic() < until:  # past it, Redis has let the lease go by itself
                await redis.release(keys, token, 0)

        invalidated = await self.customers.replay(invalidate)
        released = await self.leases.replay(release)
        return invalidated or released
