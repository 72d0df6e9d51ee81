"""Several `broker serve` processes on one Redis (or Redis Cluster), for scale-out tests.

Starting a fleet costs about a second of CPU a process, so a test module starts each
configuration once and its tests share it: each test takes customers of its own
(:func:`fresh_customer`), and :meth:`Fleet.flush` empties a plain Redis between tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import redis as sync_redis

from broker.rules.tokens import TokenMinter
from tests.servers import free_port, wait_for_port
from tests.stack import READ_PATH, WRITE_PATH
from tests.support import broker_env, make_settings

BROKER = str(Path(sys.executable).parent / "broker")


def fresh_customer(name: str) -> str:
    """A customer id no other test uses (``name`` plus a random suffix), so that tests sharing
    a fleet share no cache entry, near tier entry, limit window or idempotency key."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


class Fleet:
    """Running broker processes, a client for each, and a token minter for them."""

    def __init__(self, urls: list[str], logs: list[Path], redis_url: str) -> None:
        self.urls = urls
        self.logs = logs
        self.redis_url = redis_url
        self.clients = [httpx2.Client(base_url=url, timeout=30) for url in urls]
        self.minter = TokenMinter(make_settings())

    def auth(self, customer: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.minter.customer_token(customer).token}"}

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def flush(self) -> None:
        """Empty the fleet's (plain, not Cluster) Redis database while the processes run."""
        client = sync_redis.Redis.from_url(self.redis_url)
        try:
            client.flushdb()
        finally:
            client.close()

    def await_redis_up(self, timeout: float = 30) -> None:
        """Wait until every process's /readyz reports Redis up (after a test took it away)."""
        deadline = time.monotonic() + timeout
        while any(c.get("/readyz").json().get("redis") != "up" for c in self.clients):
            assert time.monotonic() < deadline, f"Redis not up on every process in {timeout} s"
            time.sleep(0.1)

    def seconds_to_forget(self, customer: str) -> float:
        """Cache the customer's list in the first process's near tier, send via the second,
        and poll the first: seconds from the send's answer until it serves the new list."""
        reader, sender = self.clients
        auth = self.auth(customer)
        reader.post(READ_PATH, headers=auth)
        near = reader.post(READ_PATH, headers=auth)
        assert near.headers["cache-status"].endswith("detail=near")
        old = len(near.json()["referrals"])
        sender.post(WRITE_PATH, headers=auth, json={"channel": "sms"}).raise_for_status()
        answered = time.monotonic()
        while len(reader.post(READ_PATH, headers=auth).json()["referrals"]) == old:
            assert time.monotonic() - answered < 5, "the old list is still served after 5 s"
            time.sleep(0.005)
        return time.monotonic() - answered

    def token_read_holds_the_send(self, customer: str) -> bool:
        """Send via the second process; whether the first, asked with the send's
        Consistency-Token, answers a list that holds the new referral."""
        reader, sender = self.clients
        auth = self.auth(customer)
        reader.post(READ_PATH, headers=auth)
        sent = sender.post(WRITE_PATH, headers=auth, json={"channel": "sms"})
        token = sent.headers["consistency-token"]
        read = reader.post(READ_PATH, headers={**auth, "Consistency-Token": token})
        ids = {r["referral_bhid"] for r in read.json()["referrals"]}
        return bool(sent.json()["referral"]["referral_bhid"] in ids)

    def spaced_reads(self, customer: str, count: int, gap: float = 0.3) -> list[int]:
        """``count`` reads alternating between the processes, ``gap`` seconds apart (three push
        intervals: each process has learned the other's count): their statuses."""
        auth = self.auth(customer)
        statuses = []
        for i in range(count):
            statuses.append(self.clients[i % 2 - 1].post(READ_PATH, headers=auth).status_code)
            time.sleep(gap)
        return statuses


@contextlib.contextmanager
def fleet_of(
    count: int, upstream: str, redis_url: str, workdir: Path, **env: str
) -> Iterator[Fleet]:
    """``count`` broker processes on their own ports, stopped by their PIDs on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    logs: list[Path] = []
    env_base = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    try:
        for index in range(count):
            port = free_port()
            full = {
                **env_base,
                **broker_env(
                    BROKER_UPSTREAM_URL=upstream, REDIS_URL=redis_url, PORT=str(port), **env
                ),
            }
            log = workdir / f"broker-{index}.log"
            logs.append(log)
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [BROKER, "serve"],
                        env=full,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=workdir,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_for_port(int(url.rsplit(":", 1)[1]), timeout=30)
        running = Fleet(urls, logs, redis_url)
        try:
            yield running
        finally:
            running.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
