"""Process memory as a key space: the Store's backend when Redis is not configured or is down.

A map with per-key expiry, bounded in entries and in bytes (:data:`MAX_BYTES`, 64 MiB by
default: a few hundred large referral lists), that evicts the least recently used key, with the
few operations the memory twins of the Redis scripts need (:mod:`broker.cache._backends`,
:mod:`broker.store.limits`, :mod:`broker.store.idempotency`). A value is charged its estimated
size (:func:`size_of`: its bytes and strings, plus a fixed overhead per object and per key); a
value larger than the whole budget is not kept. Operations never await, so each one is atomic
for the event loop, as a Lua script is for Redis.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

MAX_BYTES = 64 << 20  # the default byte budget of one process's memory store
KEY_OVERHEAD = 160  # bytes a key costs beyond its name and value (dict slot, tuple, expiry)
OBJECT_OVERHEAD = 56  # bytes a value object costs beyond what it holds


def now_ms() -> int:
    """The monotonic clock, in ms: the default clock of :class:`Memory`."""
    return time.monotonic_ns() // 1_000_000


def size_of(value: Any) -> int:
    """An estimate of the bytes ``value`` holds: what its strings and bytes hold, plus an
    overhead per object (tuples, lists, dicts and dataclasses are counted with their items)."""
    if isinstance(value, bytes | str):
        return len(value) + OBJECT_OVERHEAD
    if isinstance(value, tuple | list):
        return OBJECT_OVERHEAD + sum(size_of(item) for item in value)
    if isinstance(value, dict):
        return OBJECT_OVERHEAD + sum(size_of(k) + size_of(v) for k, v in value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return OBJECT_OVERHEAD + sum(size_of(getattr(value, f.name)) for f in fields)
    return OBJECT_OVERHEAD


class Memory:
    """A bounded in-process key space with per-key expiry, evicting the least recently used.

    Bounded by ``max_keys`` keys and ``max_bytes`` bytes (:func:`size_of`); ``size`` is what it
    holds now. Operations on it never await, so each one is atomic for the event loop, as a
    Lua script is for Redis.
    """

    def __init__(
        self,
        max_keys: int = 100_000,
        clock: Callable[[], int] = now_ms,
        *,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.clock = clock
        self.size = 0
        self._data: OrderedDict[str, tuple[int | None, Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value, _ = item
        if expires is not None and expires <= self.clock():
            self.delete(key)
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: str, value: Any, ttl_ms: int | None = None) -> None:
        expires = None if ttl_ms is None else self.clock() + max(1, int(ttl_ms))
        cost = len(key) + KEY_OVERHEAD + size_of(value)
        self.delete(key)
        if cost > self.max_bytes:
            return  # larger than the whole budget: not kept (a miss next time)
        self._data[key] = (expires, value, cost)
        self.size += cost
        while len(self._data) > self.max_keys or self.size > self.max_bytes:
            _, (_, _, evicted) = self._data.popitem(last=False)
            self.size -= evicted

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
            item = self._data.pop(key, None)
            if item is not None:
                self.size -= item[2]

    def clear(self) -> None:
        self._data.clear()
        self.size = 0
