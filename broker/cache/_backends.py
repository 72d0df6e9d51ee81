"""The referral cache's four steps (look up, store, release, invalidate), on Redis and on memory.

:class:`Entries` is the one interface :class:`broker.cache.cache.ReferralCache` calls, through
:meth:`broker.store.store.Store.run`; :class:`RedisEntries` runs the scripts of
:mod:`broker.cache._scripts` and reads their named replies into :class:`Lookup` and friends,
:class:`MemoryEntries` takes the same steps, in the same order, on process memory. Both answer
the same thing to the same calls (the tests run one set of behaviour tests against both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from broker.cache._scripts import INVALIDATE_LUA, PUT_LUA, READ_LUA, RELEASE_LUA
from broker.store.keys import CHANNEL, EntryKeys
from broker.store.memory import Memory
from broker.store.scripts import DecodeError, Released, decode
from broker.store.store import Store


@dataclass(frozen=True, slots=True)
class Lookup:
    """What one read found: its read count, and when caching, the entry and the lease."""

    allowed: bool
    count: int
    reset_ms: int
    gen: int = 0  # the customer's cache generation
    verdict: str = "miss"  # hit, backoff (serve stale), lead (took the lease), wait, miss
    body: bytes | None = None
    left_ms: int = 0  # freshness left; negative once stale
    holder: str = ""  # on wait: the token holding the lease
    repaired: str = ""  # what the script repaired (a bad generation), if anything
    token: str = ""  # this lookup's own lease token
    near_epoch: int = 0  # the near tier's epoch when the lookup began


@dataclass(frozen=True, slots=True)
class _Stored:
    stored: bool


@dataclass(frozen=True, slots=True)
class _Invalidated:
    gen: int
    repaired: str = ""


class Entries(Protocol):
    """The cache's steps on one backend; each is atomic (one script, or no await)."""

    @property
    def shared(self) -> bool: ...

    async def lookup(
        self, keys: EntryKeys, quota: int, window_ms: int, token: str, caching: bool
    ) -> Lookup:
        """Count the read (``quota`` 0: not counted); when caching and allowed, look the entry
        up under the current generation, and on a miss take the lease for ``token``."""
        ...

    async def put(
        self, keys: EntryKeys, body: bytes, gen: int, fresh_ms: int, keep_ms: int, token: str
    ) -> bool:
        """Store ``body`` if the generation is still ``gen``; give the lease up either way."""
        ...

    async def release(self, keys: EntryKeys, token: str, backoff_ms: int) -> None:
        """Give the lease up (when ``token`` holds it); hold upstream calls off ``backoff_ms``."""
        ...

    async def invalidate(self, gen_key: str, doomed: Sequence[str], prefix: str) -> int:
        """Bump the customer's generation and delete ``doomed``: the new generation."""
        ...


def is_json_object(body: bytes) -> bool:
    """Whether a stored body is still what the cache stored: a JSON object (not tampered)."""
    if body.lstrip()[:1] != b"{":
        return False
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


class RedisEntries:
    """The cache's steps as the scripts of :mod:`broker.cache._scripts`."""

    shared = True

    def __init__(self, store: Store, *, lease_ms: int, gen_ttl_ms: int) -> None:
        self.store = store
        self.lease_ms = lease_ms
        self.gen_ttl_ms = gen_ttl_ms
        self._read = store.script(READ_LUA)
        self._put = store.script(PUT_LUA)
        self._release = store.script(RELEASE_LUA)
        self._invalidate = store.script(INVALIDATE_LUA)

    async def lookup(
        self, keys: EntryKeys, quota: int, window_ms: int, token: str, caching: bool
    ) -> Lookup:
        raw = await self._read(
            keys=[keys.rate, keys.entry, keys.gen, keys.backoff, keys.lease],
            args=[quota, window_ms, token, self.lease_ms, int(caching), self.gen_ttl_ms],
        )
        found = decode(Lookup, raw, token=token)
        if found.repaired:
            self.store.key_repaired("cache_read", found.repaired)
        if found.body is not None and not is_json_object(found.body):
            raise DecodeError("a cache entry that is not a JSON object")
        return found

    async def put(
        self, keys: EntryKeys, body: bytes, gen: int, fresh_ms: int, keep_ms: int, token: str
    ) -> bool:
        raw = await self._put(
            keys=[keys.entry, keys.gen, keys.lease, keys.backoff],
            args=[body, gen, fresh_ms, keep_ms, token],
        )
        return decode(_Stored, raw).stored

    async def release(self, keys: EntryKeys, token: str, backoff_ms: int) -> None:
        raw = await self._release(keys=[keys.lease, keys.backoff], args=[token, backoff_ms])
        decode(Released, raw)

    async def invalidate(self, gen_key: str, doomed: Sequence[str], prefix: str) -> int:
        raw = await self._invalidate(
            keys=[gen_key, *doomed], args=[self.gen_ttl_ms, CHANNEL, prefix]
        )
        done = decode(_Invalidated, raw)
        if done.repaired:
            self.store.key_repaired("cache_invalidate", done.repaired)
        return done.gen


class MemoryEntries:
    """The cache's steps on process memory, step for step as the scripts take them.

    An entry is the tuple (body, fresh until in ms of the memory's clock, generation).
    """

    shared = False

    def __init__(self, memory: Memory, *, lease_ms: int, gen_ttl_ms: int) -> None:
        self.memory = memory
        self.lease_ms = lease_ms
        self.gen_ttl_ms = gen_ttl_ms

    async def lookup(
        self, keys: EntryKeys, quota: int, window_ms: int, token: str, caching: bool
    ) -> Lookup:
        memory = self.memory
        count = reset = 0
        if quota > 0:
            count, reset = memory.incr(keys.rate, window_ms)
            if count > quota:
                return Lookup(False, count, reset, token=token)
        if not caching:
            return Lookup(True, count, reset, token=token)
        gen: int = memory.get(keys.gen) or 0
        entry = memory.get(keys.entry)
        body, left = None, 0
        if entry is not None and entry[2] == gen:
            body, left = entry[0], entry[1] - memory.clock()
            if left > 0:
                return Lookup(True, count, reset, gen, "hit", body, left, token=token)
            if memory.pttl(keys.backoff) > 0:
                return Lookup(True, count, reset, gen, "backoff", body, left, token=token)
        holder = memory.get(keys.lease)
        if holder is None or holder == token:
            memory.set(keys.lease, token, self.lease_ms)
            return Lookup(True, count, reset, gen, "lead", body, left, token=token)
        return Lookup(True, count, reset, gen, "wait", body, left, holder, token=token)

    async def put(
        self, keys: EntryKeys, body: bytes, gen: int, fresh_ms: int, keep_ms: int, token: str
    ) -> bool:
        memory = self.memory
        stored = (memory.get(keys.gen) or 0) == gen
        if stored:
            memory.set(keys.entry, (body, memory.clock() + fresh_ms, gen), keep_ms)
            memory.delete(keys.backoff)
        if token and memory.get(keys.lease) == token:
            memory.delete(keys.lease)
        return stored

    async def release(self, keys: EntryKeys, token: str, backoff_ms: int) -> None:
        if token and self.memory.get(keys.lease) == token:
            self.memory.delete(keys.lease)
        if backoff_ms > 0:
            self.memory.set(keys.backoff, "1", backoff_ms)

    async def invalidate(self, gen_key: str, doomed: Sequence[str], prefix: str) -> int:
        gen: int = (self.memory.get(gen_key) or 0) + 1
        self.memory.set(gen_key, gen, self.gen_ttl_ms)
        self.memory.delete(*doomed)
        return gen
