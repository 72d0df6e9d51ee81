"""The invalidations Redis could not hear: kept in process and replayed on Redis when it is back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from broker.store.store import KEY_FAILURES

log = structlog.get_logger("broker.cache")


class Missed:
    """Customers (shop, customer id) invalidated while Redis was down, in order, bounded."""

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._customers: dict[tuple[str, str], None] = {}
        self._overflow = False

    def __len__(self) -> int:
        return len(self._customers)

    def add(self, shop: str, customer: str) -> None:
        if len(self._customers) < self.limit:
            self._customers[(shop, customer)] = None
        elif not self._overflow:
            self._overflow = True
            log.warning("cache.invalidations_untracked", tracked=self.limit)

    def first(self) -> tuple[str, str] | None:
        """The oldest customer still to replay, or None when all are."""
        return next(iter(self._customers), None)

    def done(self, shop: str, customer: str) -> None:
        self._customers.pop((shop, customer), None)
        if not self._customers:
            self._overflow = False

    async def replay(self, invalidate: Callable[[str, str], Awaitable[None]]) -> bool:
        """Run ``invalidate`` on Redis for every customer still to replay, oldest first (until
        none is left: customers added meanwhile included); True when there was any. A Redis
        failure stops it (the customer is kept for the next try); one customer's bad key does
        not."""
        replayed = False
        while (missed := self.first()) is not None:
            try:
                await invalidate(*missed)
            except KEY_FAILURES as exc:
                log.warning("cache.replay_failed", error=type(exc).__name__)
            self.done(*missed)
            replayed = True
        return replayed
