"""The Store: memory mode, the Redis breaker (refused, silent, killed, frozen, restarted), keys."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from broker.cache.cache import CacheKey
from broker.config.settings import RateLimit
from broker.errors import IdempotencyKeyReused
from broker.rules.functions import READ
from broker.services import cache_for
from broker.store.idempotency import Idempotency, StoredResponse
from broker.store.limits import Limiter
from broker.store.store import Store, open_store
from tests.servers import RedisProcess, free_port
from tests.support import LIFETIMES, SHOP, make_settings

KEY = CacheKey(READ.name, "v2023061", SHOP, "alice@example.com")
BODY = b'{"referrals": []}'
PROBE = 0.05  # seconds between probes of a down Redis, short for tests


async def load() -> bytes:
    return BODY


async def send() -> StoredResponse:
    return StoredResponse(200, {}, b'{"message": "sent"}')


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def exercise(store: Store) -> None:
    """One of everything the broker asks of a Store."""
    cache = cache_for(make_settings(), store)
    await cache.read(KEY, load, limit=RateLimit(1000, 60))
    await cache.invalidate(SHOP, KEY.customer)
    await Limiter(store).hit("write", "test-shop/alice", RateLimit(1000, 60))
    await Limiter(store).hit("issuer", "203.0.113.7", RateLimit(1000, 60))
    keyed = Idempotency(store, replace(LIFETIMES, idempotency_wait_s=0.05))
    try:
        await keyed.run("test-shop/alice", os.urandom(4).hex(), "fp", send)
    except IdempotencyKeyReused:
        # Redis is down: a key no process can check is refused (retry shortly), never sent.
        assert store.state == "down"


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never came true"
        await asyncio.sleep(0.02)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung Redis)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


@pytest.fixture
async def private_store(redis_server: RedisProcess) -> AsyncIterator[Store]:
    """A Store on the test's own redis-server, probing every 50 ms."""
    store = await open_store(make_settings(REDIS_URL=redis_server.url), probe_interval=PROBE)
    yield store
    await store.aclose()


async def test_without_redis_url_the_store_is_memory() -> None:
    """REDIS_URL unset: state 'memory', one event saying it is per process, everything works."""
    with capture_logs() as logs:
        store = await open_store(make_settings())
    try:
        assert store.state == "memory"
        assert await store.ping()
        await exercise(store)
        [event] = events(logs, "store.memory")
        assert "per process" in event["message"]
    finally:
        await store.aclose()


async def test_reachable_redis_is_up(private_store: Store) -> None:
    """A Redis that answers: state 'up', ping True, operations go to Redis."""
    assert private_store.state == "up"
    assert await private_store.ping()
    await exercise(private_store)
    assert private_store.redis_calls > 0
    assert private_store.fallbacks == 0


async def test_nothing_listening_starts_down_and_serves_from_memory() -> None:
    """A refused REDIS_URL: 'down' from the start, one event without the URL, all on memory."""
    url = f"redis://:hunter2-password@127.0.0.1:{free_port()}/0"
    with capture_logs() as logs:
        store = await open_store(make_settings(REDIS_URL=url), probe_interval=PROBE)
        try:
            assert store.state == "down"
            for _ in range(3):
                await exercise(store)
            await asyncio.sleep(PROBE * 3)
            assert store.state == "down"
            assert store.redis_calls == 0
            assert store.fallbacks > 0
            assert store.probes >= 1
        finally:
            await store.aclose()
    [event] = events(logs, "store.redis_down")
    assert event["error"] == "ConnectionError"
    assert "hunter2" not in repr(logs)
    assert "127.0.0.1" not in repr(logs)


async def test_silent_redis_starts_down(silent_port: int) -> None:
    """A Redis that accepts but never answers: open_store returns, 'down', served from memory."""
    with capture_logs() as logs:
        store = await open_store(
            make_settings(REDIS_URL=f"redis://127.0.0.1:{silent_port}/0"), probe_interval=PROBE
        )
        try:
            assert store.state == "down"
            await exercise(store)
            assert store.redis_calls == 0
        finally:
            await store.aclose()
    [event] = events(logs, "store.redis_down")
    assert event["error"] == "TimeoutError"


async def test_redis_killed_mid_run_then_back(
    private_store: Store, redis_server: RedisProcess
) -> None:
    """Redis stops: no exception, one down event, no Redis command while down; back by itself."""
    store = private_store
    cache = cache_for(make_settings(), store)
    assert (await cache.read(KEY, load, limit=None)).outcome == "miss"
    with capture_logs() as logs:
        redis_server.stop()
        for _ in range(5):
            await exercise(store)
        assert store.state == "down"
        attempted = store.redis_calls
        fallbacks = store.fallbacks
        for _ in range(20):
            await exercise(store)
        assert store.redis_calls == attempted
        assert store.fallbacks > fallbacks
        assert len(events(logs, "store.redis_down")) == 1
        redis_server.start()
        await until(lambda: store.state == "up")
        assert len(events(logs, "store.redis_up")) == 1
    assert (await cache.read(KEY, load, limit=None)).cache_status == "broker; fwd=miss; stored"
    assert (await cache.read(KEY, load, limit=None)).outcome == "hit"
    assert store.redis_calls > attempted


async def test_frozen_redis_trips_the_breaker_once(
    private_store: Store, redis_server: RedisProcess
) -> None:
    """A Redis that stops answering (SIGSTOP) is treated as down; it returns after SIGCONT."""
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    with capture_logs() as logs:
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.gather(*(exercise(private_store) for _ in range(10)))
            assert private_store.state == "down"
            attempted = private_store.redis_calls
            await exercise(private_store)
            assert private_store.redis_calls == attempted
        finally:
            os.kill(pid, signal.SIGCONT)
        await until(lambda: private_store.state == "up")
    assert len(events(logs, "store.redis_down")) == 1
    assert events(logs, "store.redis_down")[0]["error"] == "TimeoutError"


async def test_flushed_script_cache_is_reloaded(
    private_store: Store, redis_server: RedisProcess
) -> None:
    """After SCRIPT FLUSH (as after a restart) EVALSHA falls back to loading the script again."""
    await exercise(private_store)
    client = Redis.from_url(redis_server.url)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    with capture_logs() as logs:
        await exercise(private_store)
    assert private_store.state == "up"
    assert events(logs, "store.redis_down") == []


async def test_restart_between_requests_is_survived(
    private_store: Store, redis_server: RedisProcess
) -> None:
    """A Redis restarted while idle (scripts, connections gone) is used again without tripping."""
    await asyncio.gather(*(exercise(private_store) for _ in range(5)))
    redis_server.restart()
    with capture_logs() as logs:
        await asyncio.gather(*(exercise(private_store) for _ in range(5)))
    assert events(logs, "store.redis_down") == []
    assert private_store.fallbacks == 0
    cache = cache_for(make_settings(), private_store)
    await cache.read(KEY, load, limit=None)
    assert (await cache.read(KEY, load, limit=None)).outcome == "hit"


async def test_sends_during_an_outage_invalidate_redis_when_it_returns(
    private_store: Store, redis_server: RedisProcess
) -> None:
    """A send while Redis is unreachable still empties the customer's Redis entry afterwards."""
    assert redis_server.proc is not None
    cache = cache_for(make_settings(), private_store)
    await cache.read(KEY, load, limit=None)
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        await cache.invalidate(SHOP, KEY.customer)
        assert private_store.state == "down"
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    await until(lambda: private_store.state == "up")

    async def after_send() -> bytes:
        return b'{"referrals": ["new"]}'

    served = await cache.read(KEY, after_send, limit=None)
    assert served.body == b'{"referrals": ["new"]}'


async def test_a_read_begun_on_redis_is_not_stored_in_memory(
    private_store: Store, redis_server: RedisProcess
) -> None:
    """A load that straddles the switch to memory answers its caller but stores nothing."""
    cache = cache_for(make_settings(), private_store)
    gate = asyncio.Event()

    async def slow() -> bytes:
        await gate.wait()
        return BODY

    reading = asyncio.create_task(cache.read(KEY, slow, limit=None))
    await asyncio.sleep(0.05)
    redis_server.stop()
    await Limiter(private_store).hit("write", "x", RateLimit(5, 60))
    assert private_store.state == "down"
    gate.set()
    assert (await reading).cache_status == "broker; fwd=miss"
    redis_server.start()


async def test_keys_hold_no_raw_identifiers(
    private_store: Store, redis_server: RedisProcess
) -> None:
    """Every key starts rb:{<hash>}: and none contains a customer id, email or client address."""
    await exercise(private_store)
    await cache_for(make_settings(), private_store).read(KEY, load, limit=None)
    client = Redis.from_url(redis_server.url)
    try:
        # A client without decode_responses answers bytes; redis-py types them bytes | str.
        keys = [k.decode() for k in cast(list[bytes], await client.keys("*"))]
    finally:
        await client.aclose()
    assert keys
    for key in keys:
        assert key.startswith("rb:{")
        assert "alice" not in key
        assert "203.0.113" not in key
    # One customer's keys share one hash tag, hence one cluster slot.
    tags = {key.split("}")[0] for key in keys if ":c:" in key or ":rl:read" in key}
    assert len(tags) == 1


async def test_aclose_stops_the_probe(silent_port: int) -> None:
    """aclose() cancels the background probe; nothing keeps running."""
    store = await open_store(
        make_settings(REDIS_URL=f"redis://127.0.0.1:{silent_port}/0"), probe_interval=PROBE
    )
    await store.aclose()
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert "store-probe" not in names
