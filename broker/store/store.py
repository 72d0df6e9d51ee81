"""The Redis layer's facade: a Store backed by Redis when configured, by process memory otherwise.

The cache, the limiter and the idempotency keys each write their operations twice, behind one
small interface (a :class:`Backend` Protocol of their own): once as Lua scripts on Redis, once
as plain functions over :class:`~broker.store.memory.Memory`. They hold the pair as :class:`Twins`
and call :meth:`Store.run` with the operation written once, as a function of the backend; the
Store picks the backend, so callers cannot tell which answered (but for :attr:`Backend.shared`).

- *Redis is unusable* (refused or broken connections, time-outs, writes held back as by a
  failover's ``CLIENT PAUSE``): the first failure trips a breaker. The Store turns ``down``,
  logs ``store.redis_down`` once, answers from memory, and tries Redis again at once (then
  every ``probe_interval`` s) until it takes a write (``store.redis_up``). While up, a
  heartbeat (a ``PUBLISH``, on a connection of its own) every ``heartbeat`` s must be answered
  within ``trust`` s (the Redis timeout): a write pause turns the Store down, traffic or not,
  about when a send it held back gives up (100 ms later at most: well within 250 ms).
- *One key is bad* (Redis's own error reply such as WRONGTYPE, a failing script, OOM or
  READONLY, or a value that fails to decode, :class:`~broker.store.scripts.DecodeError`): no
  outage. The operation's keys are deleted and it runs once more; if it fails again, memory
  answers. An operation that must never be answered from an empty key (an idempotency claim)
  passes ``unreadable`` and gets that answer instead. OOM and READONLY delete no key.

Any other exception in an operation (our ``ValueError``, redis-py's ``DataError``) is a bug: it
propagates (a 500, traceback logged), deletes no key. No Redis error ever leaves this layer.

Coming back, the recovery hooks replay what Redis missed (invalidations, idempotency outcomes)
before anything is served from it; then the Store waits ``grace`` s (other processes land
theirs) and replays once more. Keys: :mod:`broker.store.keys`; client: :mod:`broker.store.connect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, TypeVar

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
from redis.exceptions import TimeoutError as RedisTimeout

from broker.config.settings import Settings
from broker.store.connect import drop_connections, make_client, probe
from broker.store.memory import Memory
from broker.store.scripts import Client, DecodeError, Script
from broker.store.twins import B, Backend, Twins
from broker.tasks import stop

__all__ = ["Backend", "Store", "Twins", "open_store"]

T = TypeVar("T")
State = Literal["up", "down", "memory"]

log = structlog.get_logger("broker.store")

# Redis not usable now (TimeoutError covers asyncio's; OSError refused connections past redis-py's
# wrapping; the cluster client raises RedisClusterException, outside RedisError, when no node is).
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)

# Error replies that speak for the whole Redis (or a whole cluster shard), not for one key.
OUTAGE_REPLIES: tuple[type[BaseException], ...] = (ClusterDownError, TryAgainError)

# Failures of one operation on its keys, with Redis itself healthy: Redis's own error reply
# (WRONGTYPE, a script error, OOM, READONLY), or a value that fails to decode (a tampered
# value). Nothing else: a ValueError or TypeError of our own code is a bug, never a bad key.
KEY_FAILURES: tuple[type[BaseException], ...] = (ResponseError, DecodeError)

# Raised by redis-py before anything is sent (an argument it cannot encode): our bug.
CLIENT_BUGS: tuple[type[BaseException], ...] = (DataError,)

# A recovery hook replays what Redis missed; True when it had something to replay.
Recovery = Callable[[], Awaitable[bool]]


class Store:
    """Redis behind a breaker, or process memory; the one place Redis errors are caught."""

    def __init__(
        self,
        client: Client | None = None,
        *,
        memory: Memory | None = None,
        probe_interval: float = 1.0,
        op_timeout: float = 1.0,
        probe_client: Client | None = None,
        heartbeat: float = 0.1,
        trust: float = 0.5,
        grace: float = 0.1,
    ) -> None:
        self.memory = memory if memory is not None else Memory()
        self.redis = client
        self.probe_client = probe_client or client  # the heartbeat's (a busy pool: no delay)
        self.probe_interval = probe_interval
        self.op_timeout = op_timeout
        self.heartbeat = heartbeat
        self.trust = trust
        self.grace = grace
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
        self._wake = asyncio.Event()  # set by a trip: try Redis again at once
        self._scripts: dict[str, Script] = {}
        self._probe_task: asyncio.Task[None] | None = None
        self._recovery: list[Recovery] = []
        self._state_hooks: list[Callable[[State], None]] = []
        # Called with (operation, seconds) after each Redis round trip, when set (metrics).
        self.timing: Callable[[str, float], None] | None = None

    @property
    def state(self) -> State:
        if self.redis is None:
            return "memory"
        return "up" if self._up else "down"

    def on_recovery(self, hook: Recovery) -> None:
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
        unreadable: Callable[[], T] | None = None,
    ) -> T:
        """Run operation ``op``, ``call(backend)``, on Redis while it is up, on memory otherwise
        or when Redis fails.

        ``keys`` are the operation's keys: when Redis answers with an error about them (or with
        something that does not decode), they are deleted and the operation tried once more.
        With ``unreadable``, such a failure is answered by ``unreadable()`` instead: no key is
        deleted and memory never answers. The memory backend never awaits, so ``call`` on it is
        atomic for the event loop.
        """
        redis = twins.redis
        if self._up and redis is not None:
            self.redis_calls += 1
            self._in_flight += 1
            self._idle.clear()
            started = time.perf_counter()
            try:
                # No timer per call on the hot path: redis-py's socket timeout bounds each reply
                # and the pool's own timeout a wait for a connection, and the heartbeat turns
                # the Store down when Redis holds replies or writes back.
                return await call(redis)
            except OUTAGE_REPLIES as exc:
                self._trip(exc)
            except KEY_FAILURES as exc:
                if unreadable is not None and not isinstance(exc, OutOfMemoryError | ReadOnlyError):
                    log.warning("store.key_error", op=op, error=type(exc).__name__, repaired=False)
                    return unreadable()
                ok, value = await self._repair(op, keys, exc, lambda: call(redis))
                if ok:
                    return value  # type: ignore[return-value]  # ok: the operation's own result
            except CLIENT_BUGS:
                raise
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
        except CLIENT_BUGS:
            raise
        except REDIS_FAILURES as down:
            self._trip(down)
        return False, None

    def _trip(self, exc: BaseException) -> None:
        if not self._up or self._closed:
            return
        self._up = False
        self.epoch += 1
        self.memory.clear()
        self._wake.set()  # what just failed is replayed as soon as Redis takes it
        log.warning("store.redis_down", error=type(exc).__name__, fallback="memory")
        self._changed()

    async def ping(self) -> bool:
        """True when Redis answers (or when there is no Redis to answer)."""
        return await self._probe(self.op_timeout, write=False) is None

    async def _probe(self, within: float, *, write: bool = True) -> BaseException | None:
        """None when Redis answers a ping (and, with ``write``, takes a write) within ``within``
        seconds; otherwise what went wrong."""
        client = self.probe_client
        if client is None:
            return None
        try:
            async with asyncio.timeout(within):
                await probe(client, write=write)
        except REDIS_FAILURES as exc:
            return exc
        return None

    async def _replay(self) -> None:
        """Run every recovery hook until a whole round finds nothing left to replay (the last
        round does not await, so nothing can be missed between it and turning up)."""
        async with asyncio.timeout(self.op_timeout * 10):
            while any([await hook() for hook in self._recovery]):
                pass

    async def _reconnect(self) -> bool | None:
        """True when Redis is back; None when it timed out (try again at once), else False."""
        self.probes += 1
        error = await self._probe(self.trust)
        if error is not None:
            return None if isinstance(error, TimeoutError | RedisTimeout) else False
        # Pooled connections may predate a Redis restart: start over with fresh ones (not
        # under calls still in flight, which the cluster client would lose their sockets).
        assert self.redis is not None
        if not self._in_flight:
            with contextlib.suppress(*REDIS_FAILURES):
                await drop_connections(self.redis)
        try:
            await self._replay()
            if self.grace > 0:
                await asyncio.sleep(self.grace)  # other processes replay what they missed
                await self._replay()
        except (TimeoutError, RedisTimeout):
            return None
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

    async def _rest(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a trip asks for Redis to be tried at once."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    async def _probe_loop(self) -> None:
        """While up, a heartbeat (a silent or write-paused Redis is noticed with no traffic);
        while down, reconnect: at once after a trip or a timed-out try, then on an interval."""
        while not self._closed:
            try:
                if self._up:
                    await asyncio.sleep(self.heartbeat)
                    if (error := await self._probe(self.trust)) is not None and self._up:
                        self._trip(error)
                else:
                    await self._rest(self.probe_interval)
                    if not self._closed and await self._reconnect() is None:
                        self._wake.set()
            except Exception as exc:  # the probe must outlive any surprise
                log.error("store.probe_failed", error=type(exc).__name__)
                await asyncio.sleep(self.probe_interval)

    async def start(self) -> None:
        """Check Redis once, then keep probing it in the background while it is down."""
        if self.redis is None:
            log.info(
                "store.memory",
                message="REDIS_URL is unset: cache, rate limits and idempotency keys are "
                "per process only",
            )
            return
        error = await self._probe(self.op_timeout)
        if error is not None:
            self._trip(error)
            self._wake.clear()
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
            for client in {id(c): c for c in (self.redis, self.probe_client) if c}.values():
                with contextlib.suppress(*REDIS_FAILURES):
                    await client.aclose()


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
    load, and short enough that only the first request after a failure waits for it. The
    heartbeat waits as long, so a write pause turns the Store down about when a send it holds
    back gives up (100 ms later at most), well within the 250 ms other processes have.
    """
    if settings.redis_url is None:
        store = Store()
    else:
        url = settings.redis_url.reveal()
        client = make_client(url, timeout=redis_timeout, max_connections=max_connections)
        # The heartbeat's own connection (a busy pool never makes it late); a cluster's own.
        probe = None
        if not isinstance(client, RedisCluster):
            probe = make_client(url, timeout=redis_timeout, max_connections=2)
        op_timeout = max(1.0, 4 * redis_timeout)
        store = Store(
            client,
            probe_client=probe,
            probe_interval=probe_interval,
            op_timeout=op_timeout,
            trust=redis_timeout,
        )
    await store.start()
    return store
