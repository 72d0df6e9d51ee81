"""The Redis layer's facade: a Store backed by Redis when configured, by process memory otherwise.

The cache, the limiter and the idempotency keys each write their operations twice, behind one
small interface (a :class:`Backend` Protocol of their own): once as Lua scripts on Redis, once
as plain functions over :class:`~broker.store.memory.Memory`. They hold the pair as :class:`Twins`
and call :meth:`Store.run` with the operation written once, as a function of the backend;
the Store picks the backend, so callers cannot tell which one answered (but for
:attr:`Backend.shared`). Two kinds of Redis failure are told apart:

- *Redis is unusable* (a refused or broken connection, a time-out): the first one trips a
  breaker. The Store turns ``down``, logs ``store.redis_down`` once, answers from memory without
  touching Redis, and probes Redis in the background until it answers again
  (``store.redis_up``). While up, the same probe pings Redis every ``probe_interval`` seconds,
  so a dead Redis is noticed (and ``/readyz`` says so) without any traffic.
- *One key is bad* (an error reply such as WRONGTYPE, a failing script, OOM or READONLY, or a
  reply that does not decode): that is no outage. The operation's keys are deleted (repaired)
  and the operation runs once more on Redis; if it fails again, that one operation is answered
  from memory. Redis stays ``up``, and ``store.key_error`` is logged. OOM and READONLY are
  no key's fault: those operations go to memory at once, and no key is deleted.

No Redis error ever leaves this layer.

Every key is written by :mod:`broker.store.keys`; the client is made by
:mod:`broker.store.connect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    DataError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from broker.config.settings import Settings
from broker.store.connect import drop_connections, make_client
from broker.store.memory import Memory
from broker.store.scripts import Client, Script
from broker.tasks import stop

T = TypeVar("T")
State = Literal["up", "down", "memory"]

log = structlog.get_logger("broker.store")

# Failures that mean "Redis is not usable right now" (the builtin TimeoutError covers
# asyncio's; OSError covers refused connections that slip past redis-py's wrapping; the
# cluster client raises RedisClusterException, outside RedisError, when no node answers).
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)

# Error replies that speak for the whole Redis (or a whole cluster shard), not for one key.
OUTAGE_REPLIES: tuple[type[BaseException], ...] = (ClusterDownError, TryAgainError)

# Failures of one operation on its keys, with Redis itself healthy: an error reply (WRONGTYPE, a
# script error, OOM, READONLY), or a reply our decoding cannot read (a tampered value).
KEY_FAILURES: tuple[type[BaseException], ...] = (
    ResponseError,
    DataError,
    ValueError,  # int() or orjson of a tampered value
    TypeError,  # int(None): a field of a tampered record missing
)


class Backend(Protocol):
    """What the Redis and the memory side of a set of operations have in common."""

    @property
    def shared(self) -> bool:
        """True when what it holds is seen by every process on the same Redis."""
        ...


B = TypeVar("B", bound=Backend)


@dataclass(frozen=True, slots=True)
class Twins(Generic[B]):
    """One set of operations on Redis (None without ``REDIS_URL``) and on process memory."""

    redis: B | None
    memory: B


class Store:
    """Redis behind a breaker, or process memory; the one place Redis errors are caught."""

    def __init__(
        self,
        client: Client | None = None,
        *,
        memory: Memory | None = None,
        probe_interval: float = 1.0,
        op_timeout: float = 1.0,
    ) -> None:
        self.memory = memory or Memory()
        self.redis = client
        self.probe_interval = probe_interval
        self.op_timeout = op_timeout
        # Bumped on every switch of backend: work begun on one backend must not be
        # finished on the other (see ReferralCache's generation check).
        self.epoch = 0
        self.redis_calls = 0
        self.fallbacks = 0
        self.writes_refused_at: float | None = None  # monotonic: Redis's last OOM or READONLY
        self.probes = 0
        self._up = client is not None
        self._closed = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._scripts: dict[str, Script] = {}
        self._probe_task: asyncio.Task[None] | None = None
        self._recovery: list[Callable[[], Awaitable[None]]] = []
        self._state_hooks: list[Callable[[State], None]] = []
        # Called with (operation, seconds) after each Redis round trip, when set (metrics).
        self.timing: Callable[[str, float], None] | None = None

    @property
    def state(self) -> State:
        if self.redis is None:
            return "memory"
        return "up" if self._up else "down"

    def on_recovery(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` against Redis when it comes back, before requests use it again."""
        self._recovery.append(hook)

    def on_state_change(self, hook: Callable[[State], None]) -> None:
        """Call ``hook`` with the new state each time Redis goes down or comes back."""
        self._state_hooks.append(hook)

    def _changed(self) -> None:
        for hook in self._state_hooks:
            hook(self.state)

    def twins(self, on_redis: Callable[[Store], B], on_memory: Callable[[Memory], B]) -> Twins[B]:
        """A set of operations made for this Store's Redis (when configured) and its memory."""
        return Twins(on_redis(self) if self.redis is not None else None, on_memory(self.memory))

    def script(self, source: str) -> Script:
        """The script for ``source`` (EVALSHA, loading it again after a flush)."""
        script = self._scripts.get(source)
        if script is None:
            assert self.redis is not None
            script = self._scripts[source] = Script(self.redis, source)
        return script

    async def run(
        self,
        twins: Twins[B],
        call: Callable[[B], Awaitable[T]],
        *,
        op: str,
        keys: Sequence[str] = (),
    ) -> T:
        """Run operation ``op``, ``call(backend)``, on Redis while it is up, on memory otherwise
        or when Redis fails.

        ``keys`` are the operation's keys: when Redis answers with an error about them (or with
        something that does not decode), they are deleted and the operation tried once more.
        The memory backend never awaits, so ``call`` on it is atomic for the event loop.
        """
        redis = twins.redis
        if self._up and redis is not None:
            self.redis_calls += 1
            self._in_flight += 1
            self._idle.clear()
            started = time.perf_counter()
            try:
                # redis-py's socket timeout bounds each reply; this bounds the whole operation
                # (several replies, a pool wait) without a timer per call on the hot path.
                return await call(redis)
            except OUTAGE_REPLIES as exc:
                self._trip(exc)
            except KEY_FAILURES as exc:
                ok, value = await self._repair(op, keys, exc, lambda: call(redis))
                if ok:
                    return value  # type: ignore[return-value]  # ok: the operation's own result
            except REDIS_FAILURES as exc:
                self._trip(exc)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()
                if self.timing is not None:
                    self.timing(op, time.perf_counter() - started)
        if self.redis is not None:
            self.fallbacks += 1
        return await call(twins.memory)

    def key_repaired(self, op: str, what: str) -> None:
        """A script found one bad key and repaired it itself (logged like any bad key)."""
        log.warning("store.key_error", op=op, error="repaired_in_script", repaired=what)

    async def _repair(
        self,
        op: str,
        keys: Sequence[str],
        exc: BaseException,
        on_redis: Callable[[], Awaitable[T]],
    ) -> tuple[bool, T | None]:
        """One bad key: delete the operation's keys and try once more; (False, None) if in vain."""
        if isinstance(exc, OutOfMemoryError | ReadOnlyError):
            self.writes_refused_at = time.monotonic()
            # Redis refuses every write (memory full, a replica): no key is at fault, and
            # deleting keys would drop good ones (an idempotency record: a double send later).
            log.warning("store.key_error", op=op, error=type(exc).__name__, repaired=False)
            return False, None
        log.warning("store.key_error", op=op, error=type(exc).__name__, repaired=bool(keys))
        try:
            if keys:
                assert self.redis is not None
                # One DEL per key: in a cluster, keys of one operation share a slot anyway.
                for key in keys:
                    await self.redis.delete(key)
            return True, await on_redis()
        except OUTAGE_REPLIES as down:
            self._trip(down)
        except KEY_FAILURES as again:
            log.warning("store.key_error_persists", op=op, error=type(again).__name__)
        except REDIS_FAILURES as down:
            self._trip(down)
        return False, None

    def _trip(self, exc: BaseException) -> None:
        if not self._up or self._closed:
            return
        self._up = False
        self.epoch += 1
        self.memory.clear()
        log.warning("store.redis_down", error=type(exc).__name__, fallback="memory")
        self._changed()

    async def ping(self) -> bool:
        """True when Redis answers (or when there is no Redis to answer)."""
        return await self._ping_error() is None

    async def _ping_error(self) -> BaseException | None:
        if self.redis is None:
            return None
        try:
            async with asyncio.timeout(self.op_timeout):
                if isinstance(self.redis, RedisCluster):
                    # Every primary: with one of them away, a share of customers' keys is too,
                    # and answering "up" on the others' word would flap between up and down.
                    await self.redis.ping(target_nodes=RedisCluster.PRIMARIES)
                else:
                    await self.redis.ping()
        except REDIS_FAILURES as exc:
            return exc
        return None

    async def _reconnect(self) -> bool:
        self.probes += 1
        if await self._ping_error() is not None:
            return False
        # Pooled connections may predate a Redis restart: start over with fresh ones.
        assert self.redis is not None
        with contextlib.suppress(*REDIS_FAILURES):
            await drop_connections(self.redis)
        try:
            async with asyncio.timeout(self.op_timeout * 10):
                for hook in self._recovery:
                    await hook()
        except REDIS_FAILURES:
            return False
        if self._closed:
            return False
        self.memory.clear()
        self.epoch += 1
        self._up = True
        log.info("store.redis_up")
        self._changed()
        return True

    async def _probe_loop(self) -> None:
        """While up, ping (a silent Redis is noticed with no traffic); while down, reconnect."""
        while not self._closed:
            await asyncio.sleep(self.probe_interval)
            try:
                if self._up:
                    error = await self._ping_error()
                    if error is not None and self._up:
                        self._trip(error)
                else:
                    await self._reconnect()
            except Exception as exc:  # the probe must outlive any surprise
                log.error("store.probe_failed", error=type(exc).__name__)

    async def start(self) -> None:
        """Check Redis once, then keep probing it in the background while it is down."""
        if self.redis is None:
            log.info(
                "store.memory",
                message="REDIS_URL is unset: cache, rate limits and idempotency keys are "
                "per process only",
            )
            return
        error = await self._ping_error()
        if error is not None:
            self._trip(error)
        else:
            log.info("store.redis_up")
        self._probe_task = asyncio.create_task(self._probe_loop(), name="store-probe")

    async def aclose(self) -> None:
        """Stop probing and close the Redis connections; later calls stay in memory."""
        self._closed = True
        self._up = False
        await stop([self._probe_task])
        self._probe_task = None
        if self.redis is not None:
            # Let calls already sent finish, so none reconnects after the pool is closed.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.op_timeout):
                    await self._idle.wait()
            with contextlib.suppress(*REDIS_FAILURES):
                await self.redis.aclose()


async def open_store(
    settings: Settings,
    *,
    redis_timeout: float = 0.5,
    max_connections: int = 64,
    probe_interval: float = 1.0,
) -> Store:
    """The Store for these settings; never fails because Redis is down (it recovers later).

    ``redis_timeout`` bounds every Redis connect and reply: past it, Redis counts as down. Half
    a second: far above a healthy reply (sub-millisecond) even under event-loop lag at full
    load, and short enough that only the first request after a failure waits for it.
    """
    if settings.redis_url is None:
        store = Store()
    else:
        client = make_client(
            settings.redis_url.reveal(), timeout=redis_timeout, max_connections=max_connections
        )
        op_timeout = max(1.0, 4 * redis_timeout)
        store = Store(client, probe_interval=probe_interval, op_timeout=op_timeout)
    await store.start()
    return store
