"""Idempotency keys: a repeated send with the same key answers the first response again.

A key is claimed atomically with a *pending* record holding the request's fingerprint and an
owner token; the outcome then replaces it for 24 h. A request that finds its key pending with the
same fingerprint waits (bounded) for that outcome; if the wait runs out it gets
:class:`IdempotencyKeyReused` saying the first request is still in progress (409, as with a
reused key: the client must not send a second copy while the first may still reach Bubblehouse).

While Redis is down a key cannot be checked (another process may hold its record), so a keyed
send waits the same bounded time for Redis and is then refused the same way: never claimed in
one process's memory. An outcome that could not be written (Redis went away during the send)
is kept and written on Redis when it is back, before anything is served from it; a record that
does not read (a missing or mistyped field) is refused with 409 too, never sent again.

Keys: ``rb:{<hash of scope>}:idem:<hash of the Idempotency-Key>``, a hash of state ``s``
(``p`` pending, ``d`` done), fingerprint ``f``, owner ``t``, take-over time ``d``, and when done
status ``c``, headers ``h`` (JSON) and body ``b``. :class:`Records` is the one interface to
them: :class:`RedisRecords` runs the scripts below and reads their named replies,
:class:`MemoryRecords` keeps the same records in process memory.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog

from broker.config.lifetimes import Lifetimes
from broker.errors import IdempotencyKeyReused
from broker.store import keys
from broker.store.memory import Memory
from broker.store.scripts import DecodeError, Released, decode
from broker.store.store import KEY_FAILURES, Store, Twins

log = structlog.get_logger("broker.idempotency")

State = Literal["claimed", "mismatch", "pending", "done", "unreadable"]

# KEYS: record. ARGV: fingerprint, owner token, take-over ms, pending record ttl ms, record ttl ms.
# A pending record lives long (so memory pressure evicts cache entries before it: see the
# runbook's eviction section) but carries its own take-over time ``d``, after which a crashed
# owner's claim may be taken by a retry. Replies (a _ClaimReply): state (claimed, mismatch,
# pending, done), and when done status, headers, body.
CLAIM_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function claim()
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 's', 'p', 'f', ARGV[1], 't', ARGV[2],
    'd', string.format('%d', now + tonumber(ARGV[3])))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'state', 'claimed'}
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return claim() end
local r = {}
if kind == 'hash' then r = redis.call('HMGET', KEYS[1], 's', 'f', 'c', 'h', 'b', 't', 'd') end
if r[1] ~= 'p' and r[1] ~= 'd' then
  -- Not a record of ours: never claimed anew (that could send twice). It lapses in time.
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
  return redis.error_reply('idempotency record tampered')
end
if r[2] ~= ARGV[1] then return {'state', 'mismatch'} end
if r[1] ~= 'd' then
  -- Our own claim seen again (a retried call after a lost reply) is still ours.
  if r[6] == ARGV[2] then return {'state', 'claimed'} end
  if r[7] and tonumber(r[7]) and tonumber(r[7]) < now then return claim() end
  return {'state', 'pending'}
end
return {'state', 'done', 'status', r[3], 'headers', r[4], 'body', r[5]}
"""

# KEYS: record. ARGV: fingerprint, owner token, status, headers JSON, body, ttl ms.
# Replies: completed (0 when another owner has taken the key over).
COMPLETE_LUA = """
local owner = redis.call('HGET', KEYS[1], 't')
if owner and owner ~= ARGV[2] then return {'completed', 0} end
redis.call('HSET', KEYS[1], 's', 'd', 'f', ARGV[1], 't', ARGV[2], 'c', ARGV[3], 'h', ARGV[4],
  'b', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {'completed', 1}
"""

# KEYS: record. ARGV: owner token. Replies: released (0 when the claim was not ours, or done).
RELEASE_LUA = """
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[1] == 'p' and r[2] == ARGV[1] then redis.call('DEL', KEYS[1]) return {'released', 1} end
return {'released', 0}
"""

# At most this much of outcomes Redis did not hear is kept for replay (a send's answer is ~1 KB).
UNHEARD_BYTES = 16 << 20
IN_PROGRESS = "A request with this Idempotency-Key is still in progress. Retry it shortly."
UNREADABLE = (
    "The first request with this Idempotency-Key may have been sent, and its outcome cannot be "
    "read. Check the referral history before sending it again under a new key."
)


@dataclass(frozen=True)
class StoredResponse:
    """The response a send answered, kept to answer its retries with."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """What claiming a key found: ``response`` when ``state`` is done."""

    state: State
    response: StoredResponse | None = None


class Records(Protocol):
    """Idempotency records on one backend; each call is atomic (one script, or no await)."""

    @property
    def shared(self) -> bool: ...

    async def claim(self, record: str, fingerprint: str, token: str) -> Claim:
        """Claim ``record`` for ``token`` unless it is held (pending), done, or another body's."""
        ...

    async def complete(
        self, record: str, fingerprint: str, token: str, response: StoredResponse
    ) -> None:
        """Keep ``response`` as the record's outcome, unless another owner has taken it over."""
        ...

    async def release(self, record: str, token: str) -> None:
        """Forget ``token``'s pending claim, so a retry runs again."""
        ...


@dataclass(frozen=True, slots=True)
class _ClaimReply:
    state: State
    status: int | None = None
    headers: str | None = None
    body: bytes | None = None


def _stored(found: _ClaimReply) -> StoredResponse:
    """A done record's response, or DecodeError when a field is missing or mistyped."""
    if found.status is None or not 100 <= found.status <= 599 or found.body is None:
        raise DecodeError("an idempotency record without a status or a body")
    try:
        headers = json.loads(found.headers or "")
    except ValueError:
        raise DecodeError("an idempotency record whose headers are not JSON") from None
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise DecodeError("an idempotency record whose headers are not an object of strings")
    return StoredResponse(found.status, headers, found.body)


@dataclass(frozen=True, slots=True)
class _Completed:
    completed: bool


class RedisRecords:
    """Records as Redis hashes, shared by every process on the Redis."""

    shared = True

    def __init__(self, store: Store, *, pending_ms: int, pending_keep_ms: int, ttl_ms: int) -> None:
        self.pending_ms = pending_ms
        self.pending_keep_ms = pending_keep_ms
        self.ttl_ms = ttl_ms
        self._claim = store.script(CLAIM_LUA)
        self._complete = store.script(COMPLETE_LUA)
        self._release = store.script(RELEASE_LUA)

    async def claim(self, record: str, fingerprint: str, token: str) -> Claim:
        raw = await self._claim(
            keys=[record],
            args=[fingerprint, token, self.pending_ms, self.pending_keep_ms, self.ttl_ms],
        )
        found = decode(_ClaimReply, raw)
        if found.state not in ("claimed", "mismatch", "pending", "done"):
            raise DecodeError(f"an idempotency claim answered {found.state!r:.20}")
        if found.state != "done":
            return Claim(found.state)
        return Claim("done", _stored(found))

    async def complete(
        self, record: str, fingerprint: str, token: str, response: StoredResponse
    ) -> None:
        headers = json.dumps(response.headers, separators=(",", ":"))
        raw = await self._complete(
            keys=[record],
            args=[fingerprint, token, response.status, headers, response.body, self.ttl_ms],
        )
        decode(_Completed, raw)

    async def release(self, record: str, token: str) -> None:
        decode(Released, await self._release(keys=[record], args=[token]))


@dataclass(frozen=True, slots=True)
class _Record:
    """A record in memory: the Redis hash's fields."""

    fingerprint: str
    token: str
    takeover: int = 0  # pending: when (memory clock, ms) a retry may take the claim over
    response: StoredResponse | None = None


class MemoryRecords:
    """Records in process memory, this process's alone, kept as the script keeps them."""

    shared = False

    def __init__(
        self, memory: Memory, *, pending_ms: int, pending_keep_ms: int, ttl_ms: int
    ) -> None:
        self.memory = memory
        self.pending_ms = pending_ms
        self.pending_keep_ms = pending_keep_ms
        self.ttl_ms = ttl_ms

    async def claim(self, record: str, fingerprint: str, token: str) -> Claim:
        found: _Record | None = self.memory.get(record)
        now = self.memory.clock()
        if found is not None:
            if found.fingerprint != fingerprint:
                return Claim("mismatch")
            if found.response is not None:
                return Claim("done", found.response)
            if found.token == token:
                return Claim("claimed")  # our own claim seen again
            if found.takeover >= now:
                return Claim("pending")
        # Free, or a crashed owner's claim past its take-over time.
        claim = _Record(fingerprint, token, now + self.pending_ms)
        self.memory.set(record, claim, self.pending_keep_ms)
        return Claim("claimed")

    async def complete(
        self, record: str, fingerprint: str, token: str, response: StoredResponse
    ) -> None:
        found: _Record | None = self.memory.get(record)
        if found is not None and found.token != token:
            return
        self.memory.set(record, _Record(fingerprint, token, response=response), self.ttl_ms)

    async def release(self, record: str, token: str) -> None:
        found: _Record | None = self.memory.get(record)
        if found is not None and found.response is None and found.token == token:
            self.memory.delete(record)


class Idempotency:
    """Runs an action once per (scope, key); replays its stored response afterwards."""

    def __init__(self, store: Store, lifetimes: Lifetimes) -> None:
        self.store = store
        self.ttl_ms = lifetimes.idempotency_ms
        self.wait = lifetimes.idempotency_wait_s
        self.pending_ms = lifetimes.claim_ms
        self.pending_keep_ms = lifetimes.pending_keep_ms
        timing = {
            "pending_ms": self.pending_ms,
            "pending_keep_ms": self.pending_keep_ms,
            "ttl_ms": self.ttl_ms,
        }
        self._records: Twins[Records] = store.twins(
            lambda on: RedisRecords(on, **timing), lambda on: MemoryRecords(on, **timing)
        )
        # Outcomes recorded in memory while Redis was down, replayed on it when it is back.
        self._unheard: OrderedDict[str, tuple[str, str, StoredResponse]] = OrderedDict()
        self._unheard_bytes = 0
        store.on_recovery(self._replay)

    async def run(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        action: Callable[[], Awaitable[StoredResponse]],
    ) -> tuple[StoredResponse, bool]:
        """(response, replayed). Raises IdempotencyKeyReused for another body under the key, or
        when the first request with this key is still running after ``wait`` seconds."""
        record = keys.idempotency(keys.scope_prefix(scope), key)
        token = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        delay = 0.01

        async def claim(on: Records) -> Claim:
            if not on.shared and self.store.redis is not None:
                # Redis is away: another process may hold this key's record, so nothing is
                # claimed here (a retry through it would be sent twice); wait for Redis.
                return Claim("pending")
            return await on.claim(record, fingerprint, token)

        while True:
            found = await self.store.run(
                self._records,
                claim,
                op="idempotency_claim",
                unreadable=lambda: Claim("unreadable"),  # never repaired into a new send
            )
            if found.state == "mismatch":
                raise IdempotencyKeyReused()
            if found.state == "unreadable":
                raise IdempotencyKeyReused(UNREADABLE)
            if found.response is not None:
                return found.response, True
            if found.state == "claimed":
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

        async def complete(on: Records) -> None:
            await on.complete(record, fingerprint, token, response)
            if not on.shared and self.store.redis is not None:
                self._remember(record, (fingerprint, token, response))

        await self.store.run(self._records, complete, op="idempotency_complete", keys=[record])
        return response, False

    async def _release(self, record: str, token: str) -> None:
        await self.store.run(
            self._records,
            lambda on: on.release(record, token),
            op="idempotency_release",
            unreadable=lambda: None,  # a record not ours to delete
        )

    def _remember(self, record: str, outcome: tuple[str, str, StoredResponse]) -> None:
        """Keep an outcome Redis did not hear, within UNHEARD_BYTES (oldest dropped first)."""
        old = self._unheard.pop(record, None)
        if old is not None:
            self._unheard_bytes -= _cost(old[2])
        self._unheard[record] = outcome
        self._unheard_bytes += _cost(outcome[2])
        while self._unheard_bytes > UNHEARD_BYTES and len(self._unheard) > 1:
            _, (_, _, dropped) = self._unheard.popitem(last=False)
            self._unheard_bytes -= _cost(dropped)
            log.warning("idempotency.outcome_untracked")

    async def _replay(self) -> bool:
        """Redis is back: write the outcomes it missed (so a retry is answered from them, never
        sent again) before anything is served from it. True when there were any."""
        redis = self._records.redis
        replayed = False
        while self._unheard and redis is not None:
            record, (fingerprint, token, response) = next(iter(self._unheard.items()))
            try:
                await redis.complete(record, fingerprint, token, response)
            except KEY_FAILURES as exc:  # one record, not the recovery's
                log.warning("idempotency.replay_failed", error=type(exc).__name__)
            if self._unheard.get(record, (None, None, None))[2] is response:
                del self._unheard[record]
                self._unheard_bytes -= _cost(response)
            replayed = True
        return replayed


def _cost(response: StoredResponse) -> int:
    return len(response.body) + sum(len(k) + len(v) for k, v in response.headers.items()) + 200
