"""The shipped Redis eviction settings, on a real redis-server under memory pressure.

The eviction policy and sample count are read from deploy/compose.yaml and the Kubernetes
manifest; the key lifetimes from the broker's own cache and idempotency objects with the
production profile. A small ``maxmemory`` stands in for the shipped 200-256 MB.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dotenv import dotenv_values
from redis import Redis

from broker.config.settings import VARIABLES, Settings, parse
from broker.services import cache_for
from broker.store.idempotency import Idempotency
from broker.store.store import open_store
from tests.e2e.test_deploy import FAKE_SECRETS, shipped_redis_eviction
from tests.servers import RedisProcess
from tests.support import LIFETIMES

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 1024 * 1024  # bytes of data above the empty server's own use
BODY = b"x" * 400  # a small referral list or stored Refer2 answer
IDEMPOTENCY_RECORDS = 500  # about a third of the budget
CACHE_CUSTOMERS = 6000  # about four budgets' worth of cache entries and rate-limit windows


def production_settings() -> Settings:
    values = {k: v for k, v in dotenv_values(ROOT / "config" / "production.env").items() if v}
    env = {"BROKER_SHOP": "example-shop", **values, **FAKE_SECRETS}
    return parse({k: v for k, v in env.items() if k in VARIABLES})


async def lifetimes_ms() -> tuple[int, int]:
    """(longest cache entry lifetime, idempotency record lifetime) as the broker sets them."""
    settings = production_settings()
    store = await open_store(settings)
    try:
        cache = cache_for(settings, store)
        return cache.ttl_ms + cache.stale_ms, Idempotency(store, LIFETIMES).ttl_ms
    finally:
        await store.aclose()


@pytest.fixture
def pressured_redis() -> Iterator[RedisProcess]:
    """A redis-server of the test's own, to be filled past a small maxmemory."""
    server = RedisProcess()
    server.start()
    yield server
    server.cleanup()


def fill(server: RedisProcess, policy: str, samples: str, cache_ms: int, idem_ms: int) -> Redis:
    """Idempotency records first, then a flood of cache entries and rate windows past maxmemory."""
    client = Redis.from_url(server.url)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + BUDGET)
    client.config_set("maxmemory-policy", policy)
    client.config_set("maxmemory-samples", samples)
    pipe = client.pipeline(transaction=False)
    for i in range(IDEMPOTENCY_RECORDS):
        record = f"rb:{{idem-{i}}}:idem:k"
        pipe.hset(record, mapping={"s": "d", "f": "fp", "t": "tok", "c": "200", "b": BODY})
        pipe.pexpire(record, idem_ms)
    pipe.execute()
    for i in range(CACHE_CUSTOMERS):
        entry = f"rb:{{cust-{i}}}:c:v2023061:0"
        pipe.hset(entry, mapping={"b": BODY, "f": "0", "g": "0"})
        pipe.pexpire(entry, cache_ms)
        pipe.set(f"rb:{{cust-{i}}}:rl:read", 1, px=10_000)
        # Read every record now and then, as repeated sends do: under an LRU policy this is
        # what keeps a record alive, not its importance.
        if i % 100 == 0:
            pipe.execute()
            pipe.exists(*[f"rb:{{idem-{n}}}:idem:k" for n in range(0, IDEMPOTENCY_RECORDS, 50)])
    pipe.execute()
    return client


def surviving_records(client: Redis) -> int:
    pipe = client.pipeline(transaction=False)
    for i in range(IDEMPOTENCY_RECORDS):
        pipe.exists(f"rb:{{idem-{i}}}:idem:k")
    return sum(pipe.execute())


async def test_shipped_policy_evicts_cache_entries_before_idempotency_records(
    pressured_redis: RedisProcess,
) -> None:
    """Under the shipped eviction settings every idempotency record outlives a cache flood."""
    policy, samples = shipped_redis_eviction()
    cache_ms, idem_ms = await lifetimes_ms()
    client = fill(pressured_redis, policy, samples, cache_ms, idem_ms)
    try:
        assert int(client.info("stats")["evicted_keys"]) > CACHE_CUSTOMERS
        assert surviving_records(client) == IDEMPOTENCY_RECORDS
    finally:
        client.close()


async def test_the_old_policy_loses_idempotency_records(pressured_redis: RedisProcess) -> None:
    """The former volatile-lru drops idempotency records under the same flood (why it changed)."""
    _, samples = shipped_redis_eviction()
    cache_ms, idem_ms = await lifetimes_ms()
    client = fill(pressured_redis, "volatile-lru", samples, cache_ms, idem_ms)
    try:
        assert surviving_records(client) < IDEMPOTENCY_RECORDS // 2
    finally:
        client.close()


async def test_cache_entries_expire_long_before_idempotency_records() -> None:
    """With production settings a cache entry lives under an hour, a record 24 h."""
    cache_ms, idem_ms = await lifetimes_ms()
    assert idem_ms == 24 * 3600 * 1000
    assert cache_ms <= 3600 * 1000 < idem_ms


@pytest.fixture
def password_redis() -> Iterator[RedisProcess]:
    """A redis-server run as kubernetes/redis.yaml runs it: with --requirepass."""
    server = RedisProcess(None, "--requirepass", "a-long-redis-password-for-tests")
    server.start()
    yield server
    server.cleanup()


@pytest.mark.parametrize(
    ("password", "state"), [("a-long-redis-password-for-tests", "up"), ("wrong", "down")]
)
async def test_broker_uses_redis_with_the_password_in_redis_url(
    password_redis: RedisProcess, password: str, state: str
) -> None:
    """REDIS_URL written as the example Secret writes it reaches a password-protected Redis."""
    url = f"redis://:{password}@127.0.0.1:{password_redis.port}/0"
    env = {"BROKER_SHOP": "example-shop", **FAKE_SECRETS, "REDIS_URL": url}
    store = await open_store(parse(env), probe_interval=60)
    try:
        assert store.state == state
    finally:
        await store.aclose()
