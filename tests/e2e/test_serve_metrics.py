"""``/metrics`` of a real ``broker serve``: the same numbers whichever worker answers, nothing
of a dead worker's gauges left, and states true at the scrape with no traffic (spec 8)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx2

from broker import __version__
from tests.servers import RedisProcess
from tests.serving import Served, broker_serve, wait_for_event, worker_pids
from tests.support import ISSUER_KEY
from tests.unit.test_metrics import samples, value


def scrape(served: Served) -> bytes:
    """One scrape on a new connection (so any worker may answer it)."""
    answer = httpx2.get(f"{served.url}/metrics", headers={"Connection": "close"}, timeout=10)
    assert answer.status_code == 200
    return answer.content


def pids_reported(body: bytes) -> set[int]:
    return {
        int(dict(labels)["pid"])
        for name, labels in samples(body)
        if name == "process_resident_memory_bytes"
    }


def wait_until(check: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not true in time"
        time.sleep(0.2)


def test_three_workers_agree_and_a_dead_worker_leaves_no_gauge(tmp_path: Path) -> None:
    """WEB_CONCURRENCY=3 and no PROMETHEUS_MULTIPROC_DIR: four scrapes give the same count of
    /healthz; each live worker is reported by pid; a killed one stops being reported."""
    redis = RedisProcess().start()
    try:
        with broker_serve(
            tmp_path, WEB_CONCURRENCY="3", REDIS_URL=redis.url, PROMETHEUS_MULTIPROC_DIR=None
        ) as served:
            wait_until(lambda: len(worker_pids(served.proc.pid)) == 3)
            wait_until(lambda: httpx2.get(f"{served.url}/readyz", timeout=5).status_code == 200, 30)
            for _ in range(30):
                httpx2.get(f"{served.url}/healthz", headers={"Connection": "close"}, timeout=5)
            time.sleep(1.5)  # every worker has flushed its tallies
            labels = {"route": "/healthz", "method": "GET", "status": "200", "error_id": ""}
            counts = [value(scrape(served), "broker_requests_total", **labels) for _ in range(4)]
            assert counts == [30, 30, 30, 30]
            body = scrape(served)
            assert value(body, "broker_build_info", version=__version__) == 1
            workers = set(worker_pids(served.proc.pid))
            wait_until(lambda: pids_reported(scrape(served)) == workers)
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            wait_for_event(served, "worker.died", worker_pid=victim)
            wait_until(lambda: victim not in pids_reported(scrape(served)))
            # Counts survive the worker that made some of them.
            assert value(scrape(served), "broker_requests_total", **labels) == 30
    finally:
        redis.cleanup()


def test_circuit_and_redis_states_are_true_at_the_scrape_without_traffic(tmp_path: Path) -> None:
    """The circuit shows open after failures and no longer open once its cool-down passed;
    Redis shows open within 5 s of going away and closed after it is back; no traffic but
    the scrapes."""
    redis = RedisProcess().start()
    try:
        with broker_serve(
            tmp_path,
            REDIS_URL=redis.url,
            BROKER_CIRCUIT_MIN_CALLS="2",
            BROKER_CIRCUIT_COOLDOWN="2",
            BROKER_UPSTREAM_BACKOFF="0",
        ) as served:
            wait_until(lambda: httpx2.get(f"{served.url}/readyz", timeout=5).status_code == 200, 30)
            token = httpx2.post(
                f"{served.url}/tokens",
                headers={"Authorization": f"Bearer {ISSUER_KEY}"},
                json={"customer_id": "alice"},
            ).json()["token"]
            for _ in range(3):  # the upstream (port 9) refuses: transient failures
                httpx2.post(
                    f"{served.url}/api/v2023061/test-shop/CustomerReferrals2",
                    headers={"Authorization": f"Bearer {token}"},
                )

            def upstream(state: str) -> float | None:
                return value(scrape(served), "broker_breaker_state", name="upstream", state=state)

            assert upstream("open") == 1
            time.sleep(2.5)
            assert upstream("open") == 0 and upstream("half_open") == 1

            def redis_open() -> float | None:
                return value(scrape(served), "broker_breaker_state", name="redis", state="open")

            assert redis_open() == 0
            redis.stop()
            stopped = time.monotonic()
            wait_until(lambda: redis_open() == 1, 10)
            assert time.monotonic() - stopped < 5
            assert value(scrape(served), "broker_redis_writable") == 0
            redis.restart()
            wait_until(lambda: redis_open() == 0, 15)
            assert value(scrape(served), "broker_redis_writable") == 1
    finally:
        redis.cleanup()
