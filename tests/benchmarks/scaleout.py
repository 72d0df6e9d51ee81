"""Benchmarks of two broker instances on one Redis: invalidation delay and a shared load.

``invalidation_delay``: instance A sends a referral; from the moment A's answer arrives, instance
B is read every millisecond or so until its list holds the new referral. B had the customer's
list in its near tier, so this measures how soon an instance stops serving the older list
without a ``Consistency-Token`` (the contract: within 250 ms). The pub/sub message itself is
timed too, by a subscriber in this process.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2
import redis

from broker.store.keys import CHANNEL
from tests.benchmarks.rig import READ_PATH, WRITE_PATH, Proc, Rig, customer_tokens, wait_ready


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


class Subscriber:
    """Notes when each invalidation message arrives, on a thread of its own."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]  # untyped in redis-py
        self.pubsub.subscribe(CHANNEL)
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                self.arrivals.append(time.perf_counter())

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.pubsub.close()
        self.client.close()


def invalidation_delay(
    r: Rig, redis_url: str, say: Callable[[str], None], rounds: int = 100
) -> dict[str, Any]:
    """Send via A, poll B: p50/p99 of the time until B serves the new list."""
    sandbox = r.sandbox(fast=False)
    a = r.broker("inval-a", redis_url, sandbox.url, BROKER_CACHE_TTL="3600")
    b = r.broker("inval-b", redis_url, sandbox.url, BROKER_CACHE_TTL="3600")
    for proc in (a, b):
        wait_ready(proc.url + "/readyz")
    tokens = customer_tokens(rounds, prefix="inval")
    subscriber = Subscriber(redis_url)
    delays: list[float] = []
    messages: list[float] = []
    stale_first_reads = 0
    try:
        with httpx2.Client(timeout=10) as client:
            for token in tokens:
                auth = {"Authorization": f"Bearer {token}"}
                client.post(b.url + READ_PATH, json={}, headers=auth)
                near = client.post(b.url + READ_PATH, json={}, headers=auth)
                assert near.headers["cache-status"].endswith("detail=near"), near.headers
                before = len(near.json()["referrals"])
                heard = len(subscriber.arrivals)
                sent = client.post(a.url + WRITE_PATH, json={"channel": "sms"}, headers=auth)
                answered = time.perf_counter()
                assert sent.status_code == 200, sent.text
                polls = 0
                while True:
                    seen = client.post(b.url + READ_PATH, json={}, headers=auth)
                    if len(seen.json()["referrals"]) > before:
                        break
                    polls += 1
                    if time.perf_counter() - answered > 5:
                        raise AssertionError("B never served the new list")
                delays.append((time.perf_counter() - answered) * 1000)
                stale_first_reads += polls > 0
                deadline = time.perf_counter() + 1
                while len(subscriber.arrivals) <= heard and time.perf_counter() < deadline:
                    time.sleep(0.001)
                if len(subscriber.arrivals) > heard:
                    messages.append((subscriber.arrivals[heard] - answered) * 1000)
    finally:
        subscriber.close()
        for proc in (a, b, sandbox):
            proc.stop()
    result = {
        "rounds": rounds,
        "b_serves_new_list_ms": {
            "p50": round(statistics.median(delays), 3),
            "p99": round(percentile(delays, 99), 3),
            "max": round(max(delays), 3),
        },
        "first_read_on_b_was_stale": stale_first_reads,
        "pubsub_message_after_answer_ms": {
            "p50": round(statistics.median(messages), 3) if messages else None,
            "p99": round(percentile(messages, 99), 3) if messages else None,
        },
    }
    say(f"  invalidation delay: {result}")
    return result


def two_instances(
    r: Rig,
    redis_url: str,
    upstream: str,
    run: Callable[[Proc, int], Any],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The cached read on two instances at once (one wrk each, 16 connections each)."""
    procs = [r.broker(f"pair-{i}", redis_url, upstream, BROKER_CACHE_TTL="3600") for i in range(2)]
    for proc in procs:
        wait_ready(proc.url + "/readyz")
    for proc in procs:
        run(proc, 2)  # warm: every customer's list in both near tiers
    results: list[Any] = [None, None]

    def drive(index: int) -> None:
        results[index] = run(procs[index], 0)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(res.rps for res in results)
    errors = sum(res.errors for res in results)
    for proc in procs:
        proc.stop()
    summary = {
        "rps_total": round(total, 1),
        "per_instance": [res.as_dict() for res in results],
        "errors": errors,
    }
    say(f"  two instances: {total:.0f} req/s in all, errors {errors}")
    return summary
