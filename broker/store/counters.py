"""Window counters of the rate limits, on Redis (scripts) and on process memory.

A counter counts requests in a fixed window that opens at its first count. :class:`Counters`
is the one interface :mod:`broker.store.limits` calls through the Store: :class:`RedisCounters`
runs the scripts below, :class:`MemoryCounters` the same steps on process memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio.cluster import RedisCluster

from broker.store.memory import Memory
from broker.store.scripts import decode
from broker.store.store import Store, Twins

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
