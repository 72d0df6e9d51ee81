"""Process memory as a key space: the Store's backend when Redis is not configured or is down.

A bounded map with per-key expiry that evicts the least recently used key, with the few
operations the memory twins of the Redis scripts need (:mod:`broker.cache._backends`,
:mod:`broker.store.limits`, :mod:`broker.store.idempotency`). Operations never await, so each one is
atomic for the event loop, as a Lua script is for Redis.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


def now_ms() -> int:
    """The monotonic clock, in ms: the default clock of :class:`Memory`."""
    return time.monotonic_ns() // 1_000_000


class Memory:
    """A bounded in-process key space with per-key expiry, evicting the least recently used.

    Operations on it never await, so each one is atomic for the event loop, as a Lua script is
    for Redis.
    """

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], int] = now_ms) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._data: OrderedDict[str, tuple[int | None, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires is not None and expires <= self.clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: str, value: Any, ttl_ms: int | None = None) -> None:
        expires = None if ttl_ms is None else self.clock() + max(1, int(ttl_ms))
        self._data[key] = (expires, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_keys:
            self._data.popitem(last=False)

    def pttl(self, key: str) -> int:
        """Milliseconds left, -1 without expiry, -2 when absent (as Redis answers)."""
        if self.get(key) is None:
            return -2
        expires = self._data[key][0]
        return -1 if expires is None else expires - self.clock()

    def incr(self, key: str, ttl_ms: int) -> tuple[int, int]:
        """Count one in a window that starts at the first count; (count, ms until reset)."""
        left = self.pttl(key)
        count = int(self.get(key) or 0) + 1
        if left < 0:
            left = ttl_ms
        self.set(key, count, left)
        return count, left

    def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
