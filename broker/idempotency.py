"""Idempotency keys: a repeated send with the same key answers the first response again.

A key is claimed atomically with a *pending* record holding the request's fingerprint and an
owner token; the outcome then replaces it for 24 h. A request that finds its key pending with the
same fingerprint waits (bounded) for that outcome; if the wait runs out it gets
:class:`IdempotencyKeyReused` saying the first request is still in progress (409, as with a
reused key: the client must not send a second copy while the first may still reach Bubblehouse).

Keys: ``rb:{<hash of scope>}:idem:<hash of the Idempotency-Key>``, a hash of state ``s``
(``p`` pending, ``d`` done), fingerprint ``f``, owner ``t``, and when done status ``c``,
headers ``h`` (JSON) and body ``b``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from broker.errors import IdempotencyKeyReused
from broker.store import Memory, Store, digest, scope_prefix

# KEYS: record. ARGV: fingerprint, owner token, take-over ms, pending record ttl ms.
# A pending record lives long (so memory pressure evicts cache entries before it: see the
# runbook's eviction section) but carries its own take-over time ``d``, after which a crashed
# owner's claim may be taken by a retry.
CLAIM_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function claim()
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 's', 'p', 'f', ARGV[1], 't', ARGV[2],
    'd', string.format('%d', now + tonumber(ARGV[3])))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'claimed'}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return claim() end
local r = redis.call('HMGET', KEYS[1], 's', 'f', 'c', 'h', 'b', 't', 'd')
if r[1] ~= 'p' and r[1] ~= 'd' then return redis.error_reply('idempotency record tampered') end
if r[2] ~= ARGV[1] then return {'mismatch'} end
if r[1] ~= 'd' then
  -- Our own claim seen again (a retried call after a lost reply) is still ours.
  if r[6] == ARGV[2] then return {'claimed'} end
  if r[7] and tonumber(r[7]) and tonumber(r[7]) < now then return claim() end
  return {'pending'}
end
return {'done', r[3], r[4], r[5]}
"""

# KEYS: record. ARGV: fingerprint, owner token, status, headers JSON, body, ttl ms.
COMPLETE_LUA = """
local owner = redis.call('HGET', KEYS[1], 't')
if owner and owner ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 's', 'd', 'f', ARGV[1], 't', ARGV[2], 'c', ARGV[3], 'h', ARGV[4],
  'b', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""

# KEYS: record. ARGV: owner token.
RELEASE_LUA = """
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[1] == 'p' and r[2] == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""

IN_PROGRESS = "A request with this Idempotency-Key is still in progress. Retry it shortly."


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    keep: bool = True  # False: the request never reached Bubblehouse; let a retry run again


@dataclass
class _Record:
    """The in-memory twin of the Redis hash."""

    fingerprint: str
    token: str
    response: StoredResponse | None = None


class Idempotency:
    """Runs an action once per (scope, key); replays its stored response afterwards."""

    def __init__(
        self,
        store: Store,
        *,
        ttl: int = 86400,
        wait: float = 10.0,
        pending_ttl: float = 120.0,
        pending_keep: float = 3600.0,
    ) -> None:
        self.store = store
        self.ttl_ms = ttl * 1000
        self.wait = wait
        # A claim outlives any upstream call, yet a crashed owner blocks its key only this long.
        self.pending_ms = int(pending_ttl * 1000)
        # ...while the pending record itself lives longer than any cache entry, so that Redis's
        # volatile-ttl eviction takes cache entries first (the take-over time is inside it).
        self.pending_keep_ms = int(max(pending_keep, pending_ttl) * 1000)

    async def run(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        action: Callable[[], Awaitable[StoredResponse]],
    ) -> tuple[StoredResponse, bool]:
        """(response, replayed). Raises IdempotencyKeyReused for another body under the key, or
        when the first request with this key is still running after ``wait`` seconds."""
        record = f"{scope_prefix(scope)}:idem:{digest(key)}"
        token = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        delay = 0.01
        while True:
            state, response = await self._claim(record, fingerprint, token)
            if state == "mismatch":
                raise IdempotencyKeyReused()
            if state == "done" and response is not None:
                return response, True
            if state == "claimed":
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise IdempotencyKeyReused(IN_PROGRESS)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)
        try:
            response = await action()
        except BaseException:
            await asyncio.shield(self._release(record, token))
            raise
        if response.keep:
            await self._complete(record, fingerprint, token, response)
        else:
            await self._release(record, token)
        return response, False

    async def _claim(
        self, record: str, fingerprint: str, token: str
    ) -> tuple[str, StoredResponse | None]:
        async def on_redis() -> tuple[str, StoredResponse | None]:
            raw = await self.store.script(CLAIM_LUA)(
                keys=[record], args=[fingerprint, token, self.pending_ms, self.pending_keep_ms]
            )
            state = raw[0].decode()
            if state != "done":
                return state, None
            headers = json.loads(raw[2]) if raw[2] else {}
            return state, StoredResponse(int(raw[1]), headers, raw[3] or b"")

        def on_memory(memory: Memory) -> tuple[str, StoredResponse | None]:
            found: _Record | None = memory.get(record)
            if found is None:
                memory.set(record, _Record(fingerprint, token), self.pending_ms)
                return "claimed", None
            if found.fingerprint != fingerprint:
                return "mismatch", None
            if found.response is None:
                return "pending", None
            return "done", found.response

        return await self.store.run(on_redis, on_memory, op="idempotency_claim", keys=[record])

    async def _complete(
        self, record: str, fingerprint: str, token: str, response: StoredResponse
    ) -> None:
        headers = json.dumps(response.headers, separators=(",", ":"))

        async def on_redis() -> None:
            args: list[Any] = [fingerprint, token, response.status, headers, response.body]
            await self.store.script(COMPLETE_LUA)(keys=[record], args=[*args, self.ttl_ms])

        def on_memory(memory: Memory) -> None:
            found: _Record | None = memory.get(record)
            if found is not None and found.token != token:
                return
            memory.set(record, _Record(fingerprint, token, response), self.ttl_ms)

        await self.store.run(on_redis, on_memory, op="idempotency_complete", keys=[record])

    async def _release(self, record: str, token: str) -> None:
        async def on_redis() -> None:
            await self.store.script(RELEASE_LUA)(keys=[record], args=[token])

        def on_memory(memory: Memory) -> None:
            found: _Record | None = memory.get(record)
            if found is not None and found.response is None and found.token == token:
                memory.delete(record)

        await self.store.run(on_redis, on_memory, op="idempotency_release", keys=[record])
