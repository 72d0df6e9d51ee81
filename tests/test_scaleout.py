"""Two broker processes sharing one Redis: invalidation, limits, idempotency and collapsing hold."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.conftest import broker_env
from tests.servers import RedisProcess, free_port, wait_for_port
from tests.stack import READ_PATH, WRITE_PATH, Sandbox

pytestmark = pytest.mark.slow
BROKER = str(Path(sys.executable).parent / "broker")


class Fleet:
    """Two `broker serve` processes and a token minter for them."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.clients = [httpx2.Client(base_url=url, timeout=30) for url in urls]

    def auth(self, customer: str) -> dict[str, str]:
        from broker.tokens import TokenMinter
        from tests.conftest import make_settings

        return {
            "Authorization": f"Bearer {TokenMinter(make_settings()).customer_token(customer).token}"
        }

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def fleet(sandbox: Sandbox, redis_server: RedisProcess) -> Iterator[Fleet]:
    """Two broker processes on their own ports, one Redis, one sandbox."""
    procs = []
    urls = []
    env_base = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    for _ in range(2):
        port = free_port()
        env = {
            **env_base,
            **broker_env(
                BROKER_UPSTREAM_URL=sandbox.url,
                REDIS_URL=redis_server.url,
                PORT=str(port),
                BROKER_RATE_LIMIT_READ="6/60s",
                BROKER_RATE_LIMIT_WRITE="100/60s",
            ),
        }
        procs.append(
            subprocess.Popen(
                [BROKER, "serve"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=Path(__file__).parent,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            wait_for_port(int(url.rsplit(":", 1)[1]), timeout=30)
        running = Fleet(urls)
        yield running
        running.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_both_processes_see_redis(fleet: Fleet) -> None:
    """Each process reports Redis up."""
    assert [c.get("/readyz").json()["redis"] for c in fleet.clients] == ["up", "up"]


def test_send_through_one_invalidates_the_cache_of_the_other(
    fleet: Fleet, sandbox: Sandbox
) -> None:
    """A history cached via A is invalidated by a send via B: A's next read shows it."""
    a, b = fleet.clients
    auth = fleet.auth("alice")
    before = a.post(READ_PATH, headers=auth).json()
    assert b.post(READ_PATH, headers=auth).headers["cache-status"].startswith("broker; hit")
    sent = b.post(WRITE_PATH, headers=auth, json={"channel": "sms"}).json()["referral"]
    after = a.post(READ_PATH, headers=auth)
    assert "fwd=miss" in after.headers["cache-status"]
    assert len(after.json()["referrals"]) == len(before["referrals"]) + 1
    assert sent["referral_bhid"] in {r["referral_bhid"] for r in after.json()["referrals"]}


def test_rate_limit_is_shared(fleet: Fleet) -> None:
    """Six reads allowed per minute in total, whichever process serves them."""
    a, b = fleet.clients
    auth = fleet.auth("limited")
    statuses = [(a if i % 2 else b).post(READ_PATH, headers=auth).status_code for i in range(8)]
    assert statuses == [200] * 6 + [429] * 2


def test_idempotency_key_is_shared(fleet: Fleet, sandbox: Sandbox) -> None:
    """A key used via A is replayed via B, and a different body via B is 409."""
    a, b = fleet.clients
    auth = {**fleet.auth("alice"), "Idempotency-Key": "fleet-key"}
    first = a.post(WRITE_PATH, headers=auth, json={"channel": "sms"})
    again = b.post(WRITE_PATH, headers=auth, json={"channel": "sms"})
    other = b.post(WRITE_PATH, headers=auth, json={"channel": "whatsapp"})
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    assert sandbox.calls()["Refer2"] == 1


def test_cold_reads_collapse_across_processes(fleet: Fleet, sandbox: Sandbox) -> None:
    """Twenty concurrent cold reads for one customer over two processes make one upstream call."""
    sandbox.fault(delay=0.5, functions=["CustomerReferrals2"], times=1)
    auth = fleet.auth("bob")
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        futures = [
            pool.submit(httpx2.post, fleet.urls[i % 2] + READ_PATH, headers=auth, timeout=30)
            for i in range(20)
        ]
        responses = [f.result() for f in futures]
    ok = [r for r in responses if r.status_code == 200]
    assert len({r.content for r in ok}) == 1
    assert sandbox.calls()["CustomerReferrals2"] == 1
