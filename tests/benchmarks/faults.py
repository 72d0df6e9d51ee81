"""A minute of mixed load while the upstream and Redis misbehave.

Run: ``python -m tests.benchmarks.faults [--seconds N]``.

Starts redis-server, the sandbox (normal mode) and the broker (``broker serve``), then for
``--seconds`` (default 60) drives reads and keyed Refer2 sends from a few customers while a
schedule slows the sandbox down, makes it fail, clears the faults and restarts Redis. It stops
by itself (time and request count are both bounded) and reports:

- requests served, answers by status and error id, and that no answer was a 500;
- for every send: each Idempotency-Key gets a unique destination, so the sandbox's own records
  say how often it reached Bubblehouse. A send answered 200 must exist exactly once upstream
  (one Refer2 request in the sandbox's request log, one referral in the customer's history),
  and no key may reach Bubblehouse twice, whatever it was answered.

Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from broker.rules.tokens import TokenMinter
from tests.benchmarks.rig import READ_PATH, ROOT, WRITE_PATH, rig, wait_ready
from tests.servers import RedisProcess
from tests.support import make_settings

CUSTOMERS = 20
WORKERS = 8
SEND_SHARE = 0.15
MAX_REQUESTS = 100_000


@dataclass
class Send:
    key: str
    customer: str
    destination: str
    answers: list[int] = field(default_factory=list)
    replayed: bool = False


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    error_ids: Counter[str] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    sends: list[Send] = field(default_factory=list)
    requests: int = 0

    def record(self, response: httpx2.Response) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code >= 400:
            try:
                self.error_ids[str(response.json().get("id"))] += 1
            except ValueError:
                self.error_ids["<not json>"] += 1


class SandboxLog:
    """Polls the sandbox's last-100 request log often enough to see every Refer2 request."""

    def __init__(self, client: httpx2.AsyncClient) -> None:
        self.client = client
        self.seen: set[str] = set()
        self.refer_destinations: Counter[str] = Counter()

    async def poll(self) -> None:
        answer = await self.client.get("/_sandbox/requests")
        for entry in answer.json()["requests"]:
            identity = json.dumps(entry, sort_keys=True)
            if identity in self.seen:
                continue
            self.seen.add(identity)
            body = entry.get("body") or {}
            if entry["function"] == "Refer2" and isinstance(body, dict):
                self.refer_destinations[str(body.get("destination"))] += 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()
            await asyncio.sleep(0.1)
        await self.poll()


async def load(
    broker: str, tokens: dict[str, str], tally: Tally, deadline: float, stop: asyncio.Event
) -> None:
    limits = httpx2.Limits(max_connections=WORKERS * 2)
    async with httpx2.AsyncClient(base_url=broker, timeout=10, limits=limits) as client:

        async def one_send(customer: str) -> None:
            key = uuid.uuid4().hex
            send = Send(key, customer, f"friend-{key}@example.com")
            tally.sends.append(send)
            body = {"channel": "email", "destination": send.destination}
            headers = {"Authorization": f"Bearer {tokens[customer]}", "Idempotency-Key": key}
            # The first try, and one retry with the same key after a failure that might have
            # been transient, as a careful client would.
            for attempt in range(2):
                try:
                    response = await client.post(WRITE_PATH, json=body, headers=headers)
                except httpx2.HTTPError as exc:
                    tally.transport_errors[type(exc).__name__] += 1
                    send.answers.append(0)
                    await asyncio.sleep(0.3)
                    continue
                tally.requests += 1
                tally.record(response)
                send.answers.append(response.status_code)
                send.replayed |= response.headers.get("idempotent-replayed") == "true"
                if response.status_code < 500 or attempt == 1:
                    return
                await asyncio.sleep(0.3)

        async def one_read(customer: str) -> None:
            try:
                response = await client.post(
                    READ_PATH, json={}, headers={"Authorization": f"Bearer {tokens[customer]}"}
                )
            except httpx2.HTTPError as exc:
                tally.transport_errors[type(exc).__name__] += 1
                return
            tally.requests += 1
            tally.record(response)

        async def worker(seed: int) -> None:
            chooser = random.Random(seed)
            customers = list(tokens)
            while time.monotonic() < deadline and tally.requests < MAX_REQUESTS:
                customer = chooser.choice(customers)
                if chooser.random() < SEND_SHARE:
                    await one_send(customer)
                else:
                    await one_read(customer)

        await asyncio.gather(*(worker(i) for i in range(WORKERS)))
    stop.set()


async def schedule(
    sandbox: str, redis_proc: RedisProcess, seconds: float, say: Any
) -> list[tuple[float, str]]:
    """The faults, at fractions of the run: slow, failing, timing out, Redis restart."""
    steps: list[tuple[float, str, dict[str, Any] | None]] = [
        (0.15, "sandbox slow (delay 0.3 s)", {"delay": 0.3}),
        (0.30, "sandbox fails (status 500)", {"status": 500}),
        (0.45, "sandbox recovers", None),
        (0.55, "redis restarts", None),
        (0.70, "sandbox times out (delay 2 s > upstream timeout 1 s)", {"delay": 2}),
        (0.80, "sandbox recovers", None),
    ]
    done: list[tuple[float, str]] = []
    started = time.monotonic()
    async with httpx2.AsyncClient(base_url=sandbox, timeout=10) as control:
        for at, what, fault in steps:
            await asyncio.sleep(max(0.0, started + at * seconds - time.monotonic()))
            say(what)
            if what == "redis restarts":
                await asyncio.to_thread(redis_proc.restart)
            else:
                (await control.delete("/_sandbox/faults")).raise_for_status()
                if fault is not None:
                    (await control.post("/_sandbox/faults", json=fault)).raise_for_status()
            done.append((round(time.monotonic() - started, 1), what))
    return done


async def upstream_referrals(sandbox: str, customers: list[str]) -> Counter[str]:
    """Every referral the sandbox holds, by destination (a shop token sees them unmasked)."""
    shop_token = TokenMinter(make_settings()).shop_token()
    found: Counter[str] = Counter()
    async with httpx2.AsyncClient(base_url=sandbox, timeout=10) as client:
        for customer in customers:
            answer = await client.post(
                READ_PATH,
                json={"customer": {"shopid": customer}, "deanonymize": True},
                headers={"Authorization": f"Bearer {shop_token}"},
            )
            if answer.status_code == 404 or answer.status_code == 400:
                continue  # a customer who never reached the sandbox
            answer.raise_for_status()
            for row in answer.json()["referrals"]:
                found[str(row.get("destination"))] += 1
    return found


async def run(seconds: float) -> dict[str, Any]:
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {line}", flush=True)

    minter = TokenMinter(make_settings())
    customers = [f"loadcust-{i}" for i in range(CUSTOMERS)]
    tokens = {c: minter.customer_token(c, ttl=3600).token for c in customers}
    redis_proc = RedisProcess().start()
    try:
        with rig() as r:
            sandbox = r.sandbox(fast=False)
            broker = r.broker(
                "broker",
                redis_proc.url,
                sandbox.url,
                BROKER_CACHE_TTL="2",
                BROKER_UPSTREAM_TIMEOUT="1",
            )
            wait_ready(broker.url + "/readyz")
            say(f"broker {broker.url}, sandbox {sandbox.url}, redis {redis_proc.url}")
            tally = Tally()
            stop = asyncio.Event()
            async with httpx2.AsyncClient(base_url=sandbox.url, timeout=10) as control:
                (await control.post("/_sandbox/reset")).raise_for_status()
                log = SandboxLog(control)
                deadline = time.monotonic() + seconds
                _, events, _ = await asyncio.gather(
                    load(broker.url, tokens, tally, deadline, stop),
                    schedule(sandbox.url, redis_proc, seconds, say),
                    log.run(stop),
                )
                calls = (await control.get("/_sandbox/calls")).json()
            referrals = await upstream_referrals(sandbox.url, customers)
            broker_log = broker.log.read_text(errors="replace")
            code = broker.stop()
    finally:
        redis_proc.cleanup()
    return verdict(tally, log, calls, referrals, events, broker_log, code, seconds)


def verdict(
    tally: Tally,
    log: SandboxLog,
    calls: dict[str, int],
    referrals: Counter[str],
    events: list[tuple[float, str]],
    broker_log: str,
    exit_code: int | None,
    seconds: float,
) -> dict[str, Any]:
    ok_sends = [s for s in tally.sends if 200 in s.answers]
    lost = [s.key for s in ok_sends if referrals[s.destination] != 1]
    dup_ok = [s.key for s in ok_sends if log.refer_destinations[s.destination] != 1]
    dup_any = [s.key for s in tally.sends if log.refer_destinations[s.destination] > 1]
    log_complete = len(log.seen) == sum(calls.values())
    internal = tally.statuses.get(500, 0)
    checks = {
        "no_500": internal == 0,
        "no_lost_send": not lost,
        "no_duplicated_send": not dup_ok and not dup_any,
        "sandbox_log_complete": log_complete,
        "broker_exit_0": exit_code == 0,
    }
    return {
        "seconds": seconds,
        "requests": tally.requests,
        "statuses": dict(sorted(tally.statuses.items())),
        "error_ids": dict(tally.error_ids.most_common()),
        "transport_errors": dict(tally.transport_errors),
        "sends": len(tally.sends),
        "sends_answered_200": len(ok_sends),
        "sends_replayed": sum(1 for s in tally.sends if s.replayed),
        "sends_retried": sum(1 for s in tally.sends if len(s.answers) > 1),
        "sandbox_calls": calls,
        "sandbox_requests_seen": len(log.seen),
        "lost": lost[:20],
        "duplicated": sorted(set(dup_ok + dup_any))[:20],
        "events": events,
        "broker_log_events": {
            name: broker_log.count(f'"event":"{name}"')
            for name in (
                "store.redis_down",
                "store.redis_up",
                "upstream.circuit_open",
                "upstream.circuit_closed",
                "request.internal_error",
            )
        },
        "checks": checks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.faults", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", default=str(ROOT / "bench-results"))
    args = parser.parse_args(argv)
    report = asyncio.run(run(args.seconds))
    print(json.dumps(report, indent=2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"faults-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"written: {path}")
    failed = [name for name, ok in report["checks"].items() if not ok]
    print("FAILED: " + ", ".join(failed) if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
