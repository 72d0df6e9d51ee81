"""The Redis layer on a real three-node Redis Cluster: one slot per customer, same behaviour."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster
from structlog.testing import capture_logs

from broker.cache.cache import CacheKey
from broker.config.settings import RateLimit
from broker.errors import IdempotencyKeyReused, RateLimitExceeded
from broker.rules.functions import READ
from broker.services import cache_for
from broker.store.idempotency import Idempotency, StoredResponse
from broker.store.keys import customer_scope, scope_prefix
from broker.store.limits import Limiter, LocalLimits
from broker.store.store import Store, open_store
from tests.fleet import Fleet, fleet_of
from tests.servers import RedisProcess, RunningServer, free_port
from tests.stack import Sandbox
from tests.support import LIFETIMES, SHOP, make_settings

# One xdist worker for the module under ``--dist loadgroup``: one cluster, one fleet.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.xdist_group("cluster")]

BODY = b'{"referrals": [{"id": "r1"}]}'


def cluster_port() -> int:
    """A free port P below 55536 whose cluster bus port P + 10000 is free too."""
    while True:
        port = free_port()
        if port >= 55536:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def cluster_ok(port: int) -> bool:
    info = subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "info"],
        capture_output=True,
        text=True,
        check=False,
        timeout=5,
    ).stdout
    return "cluster_state:ok" in info


@pytest.fixture(scope="module")
def cluster_nodes() -> Iterator[list[RedisProcess]]:
    """Three redis-server cluster nodes on loopback, all slots assigned."""
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli is not installed: run bash .ci/run, which installs it")
    nodes = [
        RedisProcess(
            cluster_port(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        )
        for _ in range(3)
    ]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=30,
        )
        deadline = time.monotonic() + 30
        while not all(cluster_ok(node.port) for node in nodes):
            assert time.monotonic() < deadline, "the cluster never reached cluster_state:ok"
            time.sleep(0.1)
        yield nodes
    finally:
        for node in nodes:
            node.cleanup()


@pytest.fixture
def cluster(cluster_nodes: list[RedisProcess]) -> str:
    """The cluster's URL."""
    return f"redis+cluster://127.0.0.1:{cluster_nodes[0].port}"


async def cluster_store(cluster: str) -> Store:
    """A Store on the cluster that a busy test machine does not turn down: these tests are about
    the cluster, not the breaker, and four test workers on two cores can stall a loop past the
    production Redis timeout (0.5 s) mid-test. The breaker's own tests keep the default."""
    return await open_store(make_settings(REDIS_URL=cluster), redis_timeout=2.0)


@pytest.fixture
async def store(cluster: str) -> AsyncIterator[Store]:
    """A Store on the cluster."""
    opened = await cluster_store(cluster)
    yield opened
    await opened.aclose()


def customer() -> str:
    """A customer id of its own for each test: the cluster is not flushed between tests."""
    return f"cust-{uuid.uuid4().hex[:12]}"


class Upstream:
    """A stand-in for the upstream call: counts calls, may wait for a gate."""

    def __init__(self, body: bytes = BODY, gate: asyncio.Event | None = None) -> None:
        self.body = body
        self.gate = gate
        self.calls = 0
        self.started = asyncio.Event()

    async def __call__(self) -> bytes:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return self.body


async def test_cluster_store_is_up_and_keys_spread_over_nodes(store: Store) -> None:
    """A cluster URL gives a RedisCluster client; customers' keys land on several nodes."""
    assert store.state == "up"
    assert isinstance(store.redis, RedisCluster)
    cache = cache_for(make_settings(), store)
    for _ in range(12):
        await cache.read(CacheKey(READ.name, "v2023061", SHOP, customer()), Upstream(), limit=None)
    assert store.fallbacks == 0
    nodes_with_keys = 0
    for node in store.redis.get_primaries():
        if await store.redis.dbsize(target_nodes=node) > 0:
            nodes_with_keys += 1
    assert nodes_with_keys >= 2


async def test_cluster_cache_hit_invalidate_and_read_your_writes(store: Store) -> None:
    """Hit after miss, and a load overlapping invalidate() is not stored, on the cluster."""
    cache = cache_for(make_settings(), store)
    who = customer()
    key = CacheKey(READ.name, "v2023061", SHOP, who)
    assert (await cache.read(key, Upstream(), limit=RateLimit(10, 60))).outcome == "miss"
    hit = await cache.read(key, Upstream(), limit=RateLimit(10, 60))
    assert hit.outcome == "hit"
    assert hit.rate is not None
    assert hit.rate.remaining == 8
    gate = asyncio.Event()
    slow = Upstream(b'{"old": true}', gate)
    await cache.invalidate(SHOP, who)
    reading = asyncio.create_task(cache.read(key, slow, limit=None))
    await slow.started.wait()
    await cache.invalidate(SHOP, who)
    gate.set()
    assert (await reading).cache_status == "broker; fwd=miss"
    fresh = Upstream(b'{"new": true}')
    assert (await cache.read(key, fresh, limit=None)).body == b'{"new": true}'
    assert store.fallbacks == 0


async def test_cluster_collapses_concurrent_misses(cluster: str, store: Store) -> None:
    """Fifty cold reads in one process and one in another Store make one upstream call."""
    other = await cluster_store(cluster)
    try:
        key = CacheKey(READ.name, "v2023061", SHOP, customer())
        gate = asyncio.Event()
        upstream = Upstream(gate=gate)
        cache = cache_for(make_settings(), store)
        reads = [asyncio.create_task(cache.read(key, upstream, limit=None)) for _ in range(50)]
        await upstream.started.wait()
        remote = asyncio.create_task(
            cache_for(make_settings(), other).read(key, upstream, limit=None)
        )
        await asyncio.sleep(0.1)
        gate.set()
        served = [*await asyncio.gather(*reads), await remote]
        assert upstream.calls == 1
        assert {s.body for s in served} == {BODY}
        assert store.fallbacks == other.fallbacks == 0
    finally:
        await other.aclose()


async def test_cluster_rate_limits_are_shared(cluster: str, store: Store) -> None:
    """Two Stores on the cluster draw from one window."""
    other = await cluster_store(cluster)
    try:
        scope = f"{SHOP}/{customer()}"
        limit = RateLimit(2, 30)
        await Limiter(store).hit("write", scope, limit)
        await Limiter(other).hit("write", scope, limit)
        with pytest.raises(RateLimitExceeded):
            await Limiter(store).hit("write", scope, limit)
        assert store.fallbacks == other.fallbacks == 0
    finally:
        await other.aclose()


async def test_cluster_synchronised_limits_push_every_slot(cluster: str, store: Store) -> None:
    """Synchronised limits push customers of many slots (one script per slot) and each
    process learns the other's counts, with Redis up throughout."""
    other = await cluster_store(cluster)
    try:
        a, b = LocalLimits(store, 0.1), LocalLimits(other, 0.1)
        prefixes = [scope_prefix(customer_scope(SHOP, customer())) for _ in range(8)]
        limit = RateLimit(10, 30)
        for prefix in prefixes:
            for limits in (a, b):  # a first sight: counted in Redis, the shared count read
                if limits.hit("read", prefix, limit) is None:
                    await limits.first("read", prefix, limit)
        await a.sync()
        await b.sync()
        await a.sync()
        decided = [a.hit("read", p, limit) for p in prefixes]
        assert [d.remaining if d else None for d in decided] == [7] * len(prefixes)
        assert store.fallbacks == other.fallbacks == 0
        assert store.state == other.state == "up"
    finally:
        await other.aclose()


async def test_cluster_idempotency(store: Store) -> None:
    """Replay, mismatch and concurrent twins behave on the cluster as on one Redis."""
    keys = Idempotency(store, LIFETIMES)
    scope = f"{SHOP}/{customer()}"
    runs = 0
    gate = asyncio.Event()

    async def send() -> StoredResponse:
        nonlocal runs
        runs += 1
        await gate.wait()
        return StoredResponse(200, {"Content-Type": "application/json"}, b'{"message": "ok"}')

    first = asyncio.create_task(keys.run(scope, "k1", "fp", send))
    twin = asyncio.create_task(keys.run(scope, "k1", "fp", send))
    await asyncio.sleep(0.05)
    gate.set()
    results = sorted([await first, await twin], key=lambda r: r[1])
    assert [replayed for _, replayed in results] == [False, True]
    assert runs == 1
    with pytest.raises(IdempotencyKeyReused):
        await keys.run(scope, "k1", "other-fp", send)
    assert store.fallbacks == 0


async def test_unreachable_cluster_starts_down_on_memory() -> None:
    """A cluster URL where nothing listens: 'down', one event, everything served from memory."""
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    with capture_logs() as logs:
        store = await open_store(make_settings(REDIS_URL=url), probe_interval=0.05)
        try:
            assert store.state == "down"
            cache = cache_for(make_settings(), store)
            key = CacheKey(READ.name, "v2023061", SHOP, customer())
            await cache.read(key, Upstream(), limit=RateLimit(5, 60))
            assert (await cache.read(key, Upstream(), limit=RateLimit(5, 60))).outcome == "hit"
            assert store.redis_calls == 0
        finally:
            await store.aclose()
    assert [e["error"] for e in logs if e["event"] == "store.redis_down"] == [
        "RedisClusterException"
    ]


async def test_cluster_node_lost_and_back(cluster_nodes: list[RedisProcess], store: Store) -> None:
    """A primary going away trips the breaker once; when it is back the Store is up again."""
    cache = cache_for(make_settings(), store)
    keys = [CacheKey(READ.name, "v2023061", SHOP, customer()) for _ in range(12)]
    lost = cluster_nodes[1]
    with capture_logs() as logs:
        lost.stop()
        try:
            for key in keys:
                await cache.read(key, Upstream(), limit=None)
            assert store.state == "down"
        finally:
            lost.start()
        deadline = time.monotonic() + 30

        # A call reads the state afresh; mypy would hold on to the "down" asserted above.
        def back_up() -> bool:
            return all(cluster_ok(n.port) for n in cluster_nodes) and store.state == "up"

        while not back_up():
            assert time.monotonic() < deadline, "the Store never came back up"
            await asyncio.sleep(0.1)
    assert len([e for e in logs if e["event"] == "store.redis_down"]) == 1
    for key in keys:
        await cache.read(key, Upstream(), limit=None)
    assert (await cache.read(keys[0], Upstream(), limit=None)).outcome == "hit"


@pytest.fixture(scope="module")
def cluster_module_fleet(
    cluster_nodes: list[RedisProcess],
    sandbox_server: RunningServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """Two `broker serve` processes on the three-node cluster, six reads a minute each customer;
    started once for the module (its tests use customers of their own)."""
    with fleet_of(
        2,
        sandbox_server.url,
        f"redis+cluster://127.0.0.1:{cluster_nodes[0].port}",
        tmp_path_factory.mktemp("cluster-fleet"),
        BROKER_RATE_LIMIT_READ="6/60s",
        BROKER_RATE_LIMIT_WRITE="100/60s",
    ) as running:
        yield running


@pytest.fixture
def cluster_fleet(cluster_module_fleet: Fleet, sandbox: Sandbox) -> Fleet:
    """The module's cluster fleet, each process with the cluster up (a test before may have
    taken a node away), and the sandbox reset."""
    cluster_module_fleet.await_redis_up()
    return cluster_module_fleet


def test_cluster_instances_share_near_cache_invalidation_and_tokens(
    cluster_fleet: Fleet,
) -> None:
    """On the cluster: the near tier drops the old list within 250 ms of a send via the other
    instance, and a send's Consistency-Token read via the other instance holds the referral."""
    assert cluster_fleet.seconds_to_forget(customer()) < 0.25
    assert cluster_fleet.token_read_holds_the_send(customer())


def test_cluster_instances_share_synchronised_limits(cluster_fleet: Fleet) -> None:
    """On the cluster: reads spaced by more than the push interval share one window of six."""
    assert cluster_fleet.spaced_reads(customer(), 8) == [200] * 6 + [429] * 2
