"""A bounded failover run: keyed sends through two brokers on one Redis, with a write pause and
a Redis stop in the middle; every send must reach Bubblehouse exactly once and no read may serve
a list from before a send once 250 ms have passed since its answer.

``python -m tests.benchmarks.failover [seconds]`` (default 60): the sandbox, one redis-server
(append-only file, so a stop and restart keeps what was written) and two ``broker serve``
processes on loopback. Four clients loop, each over customers of its own: read the list through
B (twice: B's near tier holds it), send a referral through A with a fresh ``Idempotency-Key``,
retry the same key through B (it must answer the same referral), and 250 ms after A's answer
read through B without a ``Consistency-Token``: a list without the new referral is a stale
read. At 25% of the run Redis is paused for writes for 3 s (``CLIENT PAUSE 3000 WRITE``, what a
failover does); at 55% it is stopped for 1.8 s and started again on the same port. At the end
every key is retried once more through a random instance (each must be answered from its
record), and the sandbox's count of Refer2 calls must equal the number of keys. Prints one line
per phase and a JSON summary; exits 1 when a send was made twice, a retry differed, or a read
was stale.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx2
import redis

from broker.rules.tokens import TokenMinter
from tests.benchmarks.rig import READ_PATH, WRITE_PATH, Rig, rig, wait_ready
from tests.servers import RedisProcess
from tests.support import make_settings

CLIENTS = 4
DEBUG = False
CUSTOMERS_PER_CLIENT = 8


@dataclass
class Tally:
    """What the clients saw, shared between their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (token, bhid)
    stale: Counter[str] = field(default_factory=Counter)  # phase -> stale reads
    reads: Counter[str] = field(default_factory=Counter)  # phase -> checked reads
    retry_mismatch: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class Clock:
    """The run's phases, by the time since it started."""

    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.pause_at, self.pause_s = seconds * 0.25, 3.0
        self.stop_at, self.stop_s = seconds * 0.55, 1.8

    def phase(self, at: float | None = None) -> str:
        t = (time.monotonic() if at is None else at) - self.started
        if self.pause_at <= t < self.pause_at + self.pause_s:
            return "pause"
        if self.pause_at + self.pause_s <= t < self.pause_at + self.pause_s + 5:
            return "after-pause"
        if self.stop_at <= t < self.stop_at + self.stop_s:
            return "stop"
        if self.stop_at + self.stop_s <= t < self.stop_at + self.stop_s + 5:
            return "after-stop"
        return "steady"


def holds(answer: httpx2.Response, bhid: str) -> bool:
    return answer.status_code == 200 and bhid in {
        r["referral_bhid"] for r in answer.json()["referrals"]
    }


def send(client: httpx2.Client, url: str, auth: dict[str, str], key: str) -> httpx2.Response:
    """One keyed send, repeated while the first is reported in progress (409), bounded."""
    headers = {**auth, "Idempotency-Key": key}
    for _ in range(200):
        answer = client.post(url + WRITE_PATH, json={"channel": "sms"}, headers=headers)
        if answer.status_code != 409:
            return answer
        time.sleep(0.05)
    return answer


def client_loop(
    index: int, a: str, b: str, clock: Clock, until: float, tally: Tally, minter: TokenMinter
) -> None:
    run = uuid.uuid4().hex[:6]
    tokens = [
        minter.customer_token(f"fo-{run}-{index}-{i}", ttl=3600).token
        for i in range(CUSTOMERS_PER_CLIENT)
    ]
    turn = 0
    with httpx2.Client(timeout=15) as client:
        while time.monotonic() < until:
            token = tokens[turn % len(tokens)]
            turn += 1
            auth = {"Authorization": f"Bearer {token}"}
            client.post(b + READ_PATH, json={}, headers=auth)
            client.post(b + READ_PATH, json={}, headers=auth)
            key = f"{run}-{index}-{turn}"
            sent = send(client, a, auth, key)
            answered = time.monotonic()
            if sent.status_code != 200:
                with tally.lock:
                    tally.errors[f"send {sent.status_code}"] += 1
                continue
            bhid = sent.json()["referral"]["referral_bhid"]
            retry = send(client, b, auth, key)
            with tally.lock:
                tally.sent[key] = (token, bhid)
                if retry.status_code != 200 or retry.json()["referral"]["referral_bhid"] != bhid:
                    tally.retry_mismatch += 1
            time.sleep(max(0.0, answered + 0.25 - time.monotonic()))
            phase = clock.phase()
            read = client.post(b + READ_PATH, json={}, headers=auth)
            with tally.lock:
                tally.reads[phase] += 1
                if not holds(read, bhid):
                    tally.stale[phase] += 1
                    if DEBUG and tally.stale[phase] == 1:
                        print(phase, read.status_code, read.headers, read.text[:300], bhid)


def faults(server: RedisProcess, clock: Clock, say: Any) -> None:
    """The write pause, then the stop, at their times."""
    time.sleep(max(0.0, clock.started + clock.pause_at - time.monotonic()))
    plain = redis.Redis.from_url(server.url)
    plain.client_pause(int(clock.pause_s * 1000), all=False)
    plain.close()
    say(f"  {time.monotonic() - clock.started:5.1f} s  CLIENT PAUSE {clock.pause_s:.0f} s WRITE")
    time.sleep(max(0.0, clock.started + clock.stop_at - time.monotonic()))
    server.stop()
    say(f"  {time.monotonic() - clock.started:5.1f} s  redis-server stopped")
    time.sleep(clock.stop_s)
    server.start()
    say(f"  {time.monotonic() - clock.started:5.1f} s  redis-server started again")


def failover(r: Rig, seconds: float, say: Any, *, with_faults: bool = True) -> dict[str, Any]:
    server = RedisProcess(None, "--appendonly", "yes", "--appendfsync", "always").start()
    try:
        sandbox = r.sandbox(fast=False)
        a = r.broker("failover-a", server.url, sandbox.url, BROKER_CACHE_TTL="3600")
        b = r.broker("failover-b", server.url, sandbox.url, BROKER_CACHE_TTL="3600")
        for proc in (a, b):
            wait_ready(proc.url + "/readyz")
        httpx2.delete(sandbox.url + "/_sandbox/requests", timeout=5)
        before = httpx2.get(sandbox.url + "/_sandbox/calls", timeout=5).json().get("Refer2", 0)
        tally, clock, minter = Tally(), Clock(seconds), TokenMinter(make_settings())
        until = clock.started + seconds
        threads = [
            threading.Thread(
                target=client_loop, args=(i, a.url, b.url, clock, until, tally, minter)
            )
            for i in range(CLIENTS)
        ]
        if with_faults:
            threads.append(threading.Thread(target=faults, args=(server, clock, say)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 120)
        # Every key once more, long after its send, through either instance.
        replays = mismatched = 0
        with httpx2.Client(timeout=15) as client:
            for key, (token, bhid) in tally.sent.items():
                url = random.choice([a.url, b.url])
                answer = send(client, url, {"Authorization": f"Bearer {token}"}, key)
                replays += answer.headers.get("idempotent-replayed") == "true"
                if answer.status_code != 200 or answer.json()["referral"]["referral_bhid"] != bhid:
                    mismatched += 1
        calls = httpx2.get(sandbox.url + "/_sandbox/calls", timeout=5).json().get("Refer2", 0)
        return {
            "seconds": seconds,
            "keys": len(tally.sent),
            "refer2_calls": calls - before,
            "final_retries_replayed": replays,
            "final_retries_mismatched": mismatched,
            "retry_mismatch_during_run": tally.retry_mismatch,
            "checked_reads": dict(tally.reads),
            "stale_reads": dict(tally.stale),
            "errors": dict(tally.errors),
        }
    finally:
        server.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    seconds = float(args[0]) if args else 60.0
    with_faults = "--no-faults" not in args  # the same run without faults, for comparison

    def say(line: str) -> None:
        print(line, flush=True)

    say(f"failover: {seconds:.0f} s of keyed sends, a 3 s write pause and a 1.8 s Redis stop")
    with rig() as r:
        result = failover(r, seconds, say, with_faults=with_faults)
    say(json.dumps(result, indent=2))
    ok = (
        result["refer2_calls"] == result["keys"]
        and result["final_retries_mismatched"] == 0
        and result["retry_mismatch_during_run"] == 0
        and not any(result["stale_reads"].values())
    )
    say("every send exactly once, no stale read" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
