"""Two broker processes sharing one Redis: invalidation, limits, idempotency and collapsing hold.

Each configuration (default limits; six reads a minute, synchronised; the same, strict) is one
fleet of two `broker serve` processes on a redis-server of its own, started once for the module
and shared by its tests: before each test its Redis is flushed and the sandbox reset, and every
test uses customers no other test uses, so what it asserts comes from its own requests alone.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet import Fleet, fleet_of, fresh_customer
from tests.servers import RedisProcess, RunningServer
from tests.stack import READ_PATH, WRITE_PATH, Sandbox

# One xdist worker for the module under ``--dist loadgroup``, so each fleet starts once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("scaleout")]
LIMITS = {"BROKER_RATE_LIMIT_READ": "6/60s", "BROKER_RATE_LIMIT_WRITE": "100/60s"}


@contextlib.contextmanager
def fleet_on_own_redis(upstream: str, workdir: Path, **env: str) -> Iterator[Fleet]:
    """Two broker processes on a redis-server of their own (a test kills its pub/sub
    connections, which must not touch another fleet)."""
    redis = RedisProcess().start()
    try:
        with fleet_of(2, upstream, redis.url, workdir, **env) as running:
            yield running
    finally:
        redis.cleanup()


@pytest.fixture(scope="module")
def default_fleet(
    sandbox_server: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The module's fleet with default limits."""
    workdir = tmp_path_factory.mktemp("fleet-default")
    with fleet_on_own_redis(sandbox_server.url, workdir) as running:
        yield running


@pytest.fixture(scope="module")
def limited_module_fleet(
    sandbox_server: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The module's fleet allowing six reads a minute, synchronised limits."""
    workdir = tmp_path_factory.mktemp("fleet-limited")
    with fleet_on_own_redis(sandbox_server.url, workdir, **LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def strict_module_fleet(
    sandbox_server: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The module's fleet with strict limits (every request counted in Redis)."""
    workdir = tmp_path_factory.mktemp("fleet-strict")
    with fleet_on_own_redis(
        sandbox_server.url, workdir, BROKER_RATE_LIMIT_SYNC="0", **LIMITS
    ) as running:
        yield running


@pytest.fixture
def fleet(default_fleet: Fleet, sandbox: Sandbox) -> Fleet:
    """Two broker processes on their own ports, one Redis (flushed), one sandbox (reset);
    default limits."""
    default_fleet.flush()
    return default_fleet


@pytest.fixture
def limited_fleet(limited_module_fleet: Fleet, sandbox: Sandbox) -> Fleet:
    """Two broker processes allowing six reads a minute, synchronised limits; Redis flushed."""
    limited_module_fleet.flush()
    return limited_module_fleet


@pytest.fixture
def strict_fleet(strict_module_fleet: Fleet, sandbox: Sandbox) -> Fleet:
    """Two broker processes with strict limits (every request counted in Redis); Redis flushed."""
    strict_module_fleet.flush()
    return strict_module_fleet


def test_both_processes_see_redis(fleet: Fleet) -> None:
    """Each process reports Redis up."""
    assert [c.get("/readyz").json()["redis"] for c in fleet.clients] == ["up", "up"]


def test_send_through_one_invalidates_the_cache_of_the_other(
    fleet: Fleet, sandbox: Sandbox
) -> None:
    """A history cached via A is invalidated by a send via B: A's next read shows it."""
    a, b = fleet.clients
    auth = fleet.auth(fresh_customer("alice"))
    before = a.post(READ_PATH, headers=auth).json()
    assert b.post(READ_PATH, headers=auth).headers["cache-status"].startswith("broker; hit")
    sent = b.post(WRITE_PATH, headers=auth, json={"channel": "sms"}).json()["referral"]
    after = a.post(READ_PATH, headers=auth)
    assert "fwd=miss" in after.headers["cache-status"]
    assert len(after.json()["referrals"]) == len(before["referrals"]) + 1
    assert sent["referral_bhid"] in {r["referral_bhid"] for r in after.json()["referrals"]}


def test_strict_rate_limit_is_shared_exactly(strict_fleet: Fleet) -> None:
    """Strict mode: six reads allowed per minute in total, whichever process serves them."""
    a, b = strict_fleet.clients
    auth = strict_fleet.auth(fresh_customer("limited"))
    statuses = [(a if i % 2 else b).post(READ_PATH, headers=auth).status_code for i in range(8)]
    assert statuses == [200] * 6 + [429] * 2


def test_synchronised_rate_limit_is_shared(limited_fleet: Fleet) -> None:
    """Synchronised mode: reads spaced by more than the push interval share one exact window."""
    assert limited_fleet.spaced_reads(fresh_customer("limited"), 8) == [200] * 6 + [429] * 2


def test_synchronised_limits_stay_within_the_bound_and_converge(limited_fleet: Fleet) -> None:
    """A burst over two processes admits at most one limit per process, and within 2 s both
    processes agree that the window is used up."""
    fleet = limited_fleet
    auth = fleet.auth(fresh_customer("bursty"))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(
            pool.map(
                lambda i: fleet.clients[i % 2].post(READ_PATH, headers=auth).status_code,
                range(40),
            )
        )
    burst_over = time.monotonic()
    admitted = statuses.count(200)
    assert 6 <= admitted <= 12, statuses  # limit <= admitted <= instances x limit
    while True:
        late = time.monotonic() - burst_over > 2
        after = [client.post(READ_PATH, headers=auth) for client in fleet.clients]
        if [r.status_code for r in after] == [429, 429] and all(
            "r=0" in r.headers["ratelimit"] for r in after
        ):
            break
        assert not late, [(r.status_code, r.headers.get("ratelimit")) for r in after]
        time.sleep(0.05)


def test_near_cache_serves_without_redis_and_forgets_within_250_ms(fleet: Fleet) -> None:
    """A's second read comes from its near tier; after a send via B, A stops serving the old
    list within 250 ms of B's answer (without a Consistency-Token)."""
    assert fleet.seconds_to_forget(fresh_customer("carol")) < 0.25


def test_consistency_token_reads_the_send_on_another_process(fleet: Fleet) -> None:
    """A send's Consistency-Token, sent back on a read via the other process, gets a list
    that holds the new referral at once."""
    assert fleet.token_read_holds_the_send(fresh_customer("dora"))


def test_lost_subscription_turns_the_near_tier_off(fleet: Fleet) -> None:
    """Killing the processes' pub/sub connections stops near hits until they subscribe again
    (both of them), and a send made meanwhile is seen by the next read."""
    import redis as sync_redis

    a, b = fleet.clients
    auth = fleet.auth(fresh_customer("erin"))
    a.post(READ_PATH, headers=auth)
    assert a.post(READ_PATH, headers=auth).headers["cache-status"].endswith("detail=near")
    client = sync_redis.Redis.from_url(fleet.redis_url)
    try:
        client.client_kill_filter(_type="pubsub")
    finally:
        client.close()
    sent = b.post(WRITE_PATH, headers=auth, json={"channel": "sms"}).json()["referral"]
    read = a.post(READ_PATH, headers=auth)
    assert sent["referral_bhid"] in {r["referral_bhid"] for r in read.json()["referrals"]}
    deadline = time.monotonic() + 10
    for process in (a, b):
        while (
            not process.post(READ_PATH, headers=auth)
            .headers["cache-status"]
            .endswith("detail=near")
        ):
            assert time.monotonic() < deadline, "the near tier never came back"
            time.sleep(0.1)


def test_idempotency_key_is_shared(fleet: Fleet, sandbox: Sandbox) -> None:
    """A key used via A is replayed via B, and a different body via B is 409."""
    a, b = fleet.clients
    auth = {**fleet.auth(fresh_customer("alice")), "Idempotency-Key": "fleet-key"}
    first = a.post(WRITE_PATH, headers=auth, json={"channel": "sms"})
    again = b.post(WRITE_PATH, headers=auth, json={"channel": "sms"})
    other = b.post(WRITE_PATH, headers=auth, json={"channel": "whatsapp"})
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    assert sandbox.calls()["Refer2"] == 1


def test_cold_reads_collapse_across_processes(fleet: Fleet, sandbox: Sandbox) -> None:
    """Twenty concurrent cold reads for one customer over two processes make one upstream call."""
    sandbox.fault(delay=0.5, functions=["CustomerReferrals2"], times=1)
    auth = fleet.auth(fresh_customer("bob"))
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        futures = [
            pool.submit(fleet.clients[i % 2].post, READ_PATH, headers=auth) for i in range(20)
        ]
        responses = [f.result() for f in futures]
    ok = [r for r in responses if r.status_code == 200]
    assert len({r.content for r in ok}) == 1
    assert sandbox.calls()["CustomerReferrals2"] == 1
