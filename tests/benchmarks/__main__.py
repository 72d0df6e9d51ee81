"""The broker against hand-written proxies: ``python -m tests.benchmarks [--short]``.

Starts everything on loopback (redis-server, the sandbox in fast mode, the broker with
``broker serve``, two baselines on the same server), drives it with wrk, alternates broker and
baseline runs, and prints medians and ratios; the JSON goes to ``bench-results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import redis

from tests.benchmarks.baselines import BODY_KEY
from tests.benchmarks.rig import (
    READ_PATH,
    ROOT,
    Proc,
    Rig,
    WrkResult,
    WrkScript,
    customer_tokens,
    rig,
    run_wrk,
    wait_ready,
    write_script,
)
from tests.benchmarks.scaleout import invalidation_delay, two_instances
from tests.servers import RedisProcess

SWEEP = (1, 8, 32, 128, 256)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def median_of(results: list[WrkResult]) -> dict[str, Any]:
    return {
        "rps": round(statistics.median(r.rps for r in results), 1),
        "p50_ms": round(statistics.median(r.p50_ms for r in results), 3),
        "p99_ms": round(statistics.median(r.p99_ms for r in results), 3),
        "errors": sum(r.errors for r in results),
        "runs": [r.as_dict() for r in results],
    }


class Bench:
    def __init__(self, rig: Rig, *, seconds: int, rounds: int, say: Callable[[str], None]):
        self.rig = rig
        self.seconds = seconds
        self.rounds = rounds
        self.say = say

    def run(
        self,
        proc: Proc,
        script: WrkScript,
        connections: int,
        path: str = READ_PATH,
        seconds: int | None = None,
    ) -> WrkResult:
        result = run_wrk(
            proc.url + path, script, connections=connections, seconds=seconds or self.seconds
        )
        self.say(
            f"    {proc.name:<16} c={connections:<3} {result.rps:>9.1f} req/s  "
            f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  errors {result.errors}"
        )
        return result

    def alternate(
        self,
        a: tuple[Proc, str],
        b: tuple[Proc, str],
        script: WrkScript,
        connections: int,
        rounds: int | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``rounds`` pairs of runs, alternating which side goes first; medians of each."""
        runs_a: list[WrkResult] = []
        runs_b: list[WrkResult] = []
        for i in range(rounds or self.rounds):
            order = [(a, runs_a), (b, runs_b)]
            if i % 2:
                order.reverse()
            for (proc, path), into in order:
                into.append(self.run(proc, script, connections, path))
        return median_of(runs_a), median_of(runs_b)


def compare(
    name: str, broker: dict[str, Any], baseline: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "scenario": name,
        "broker": broker,
        "baseline": baseline,
        "rps_ratio": round(broker["rps"] / baseline["rps"], 3) if baseline["rps"] else None,
        "p99_ratio": round(broker["p99_ms"] / baseline["p99_ms"], 3)
        if baseline["p99_ms"]
        else None,
        **extra,
    }


def cache_entries(client: redis.Redis) -> int:
    return sum(1 for _ in client.scan_iter(match="rb:*:c:*", count=1000))


def settle_keys(client: redis.Redis, timeout: float = 8.0) -> int:
    """Wait for short-lived keys (rate windows) to expire; the final key count."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        size = int(client.dbsize())
        if size == last:
            return size
        last = size
        time.sleep(1.0)
    return last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument("--short", action="store_true", help="CI smoke: about 3 minutes")
    parser.add_argument("--out", default=str(ROOT / "bench-results"))
    args = parser.parse_args(argv)
    seconds, rounds, sweep_seconds, sweep_rounds = (3, 2, 3, 1) if args.short else (10, 3, 6, 2)
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)

    report: dict[str, Any] = {
        "mode": "short" if args.short else "full",
        "machine": machine(),
        "wrk": {"threads": 1, "seconds": seconds, "rounds": rounds},
        "scenarios": [],
    }
    redis_proc = RedisProcess().start()
    try:
        with rig() as r:
            report["scenarios"], report["memory"] = run_all(
                r,
                redis_proc,
                Bench(r, seconds=seconds, rounds=rounds, say=say),
                sweep_seconds=sweep_seconds,
                sweep_rounds=sweep_rounds,
                say=say,
            )
    finally:
        redis_proc.cleanup()
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    print_table(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{report['mode']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwritten: {path}")
    return 0


def run_all(
    r: Rig,
    redis_proc: RedisProcess,
    bench: Bench,
    *,
    sweep_seconds: int,
    sweep_rounds: int,
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    results: list[dict[str, Any]] = []
    client = redis.Redis.from_url(redis_proc.url)
    say("starting redis, sandbox (fast), brokers and baselines")
    sandbox = r.sandbox(fast=True)
    tokens = customer_tokens(1000)
    read_url = sandbox.url + READ_PATH
    body = httpx2.post(read_url, headers={"Authorization": f"Bearer {tokens[0]}"}, json={}).content
    client.set(BODY_KEY, body)
    cached = r.broker("broker-cached", redis_proc.url, sandbox.url, BROKER_CACHE_TTL="3600")
    cold = r.broker("broker-cold", redis_proc.url, sandbox.url, BROKER_CACHE_TTL="0")
    base_redis = r.baseline("redis", BASELINE_REDIS_URL=redis_proc.url)
    base_http = r.baseline("aiohttp", BASELINE_UPSTREAM_URL=read_url, BASELINE_TOKEN=tokens[0])
    for proc in (cached, cold):
        wait_ready(proc.url + "/readyz")
    for proc in (base_redis, base_http):
        wait_ready(proc.url + "/")
    script = write_script(r.workdir, "tokens-1000", tokens, READ_PATH)
    say(f"2 KB body: {len(body)} bytes; warming the cache for 1000 customers")
    bench.run(cached, script, 32, seconds=2)
    bench.run(cold, script, 32, seconds=2)
    bench.run(base_redis, script, 32, seconds=1)
    bench.run(base_http, script, 32, seconds=1)
    check = httpx2.post(
        cached.url + READ_PATH, json={}, headers={"Authorization": f"Bearer {tokens[5]}"}
    )
    say(f"cache check: {check.status_code} Cache-Status: {check.headers.get('cache-status')}")
    assert check.status_code == 200 and "hit" in check.headers["cache-status"]

    say("cached read vs Redis-GET baseline, 32 connections")
    b, a = bench.alternate((cached, READ_PATH), (base_redis, "/"), script, 32)
    results.append(compare("cached read vs redis GET (c=32)", b, a, target="rps >= 1.2x"))

    say("cold read vs aiohttp baseline, 32 connections")
    b, a = bench.alternate((cold, READ_PATH), (base_http, "/"), script, 32)
    results.append(compare("cold read vs aiohttp GET (c=32)", b, a, target="rps >= 0.9x"))

    say("connection sweep: cold read vs aiohttp baseline")
    saved = bench.seconds
    bench.seconds = sweep_seconds
    for connections in SWEEP:
        b, a = bench.alternate(
            (cold, READ_PATH), (base_http, "/"), script, connections, rounds=sweep_rounds
        )
        results.append(
            compare(
                f"sweep cold read vs aiohttp (c={connections})",
                b,
                a,
                connections=connections,
                target="no cliff",
            )
        )
    bench.seconds = saved

    say("added latency: cold read vs the sandbox direct, 1 connection")
    b, a = bench.alternate((cold, READ_PATH), (sandbox, READ_PATH), script, 1)
    added = round(b["p50_ms"] - a["p50_ms"], 3)
    results.append(
        compare(
            "cold read vs sandbox direct (c=1)",
            b,
            a,
            added_p50_ms=added,
            target="added p50 <= 0.5 ms",
        )
    )

    say("cached read (near tier) vs Redis GET, 1 connection")
    b, a = bench.alternate((cached, READ_PATH), (base_redis, "/"), script, 1)
    results.append(
        compare(
            "cached read vs redis GET (c=1)",
            b,
            a,
            added_p50_ms=round(b["p50_ms"] - a["p50_ms"], 3),
            target="latency",
        )
    )

    say("10,000 customers cached: Redis memory per entry, worker RSS")
    memory = many_customers(bench, cached, client, r)
    say(f"  {memory}")

    say("1 vs 2 workers, cached read, 32 connections")
    cached2 = r.broker(
        "broker-cached-2w", redis_proc.url, sandbox.url, workers=2, BROKER_CACHE_TTL="3600"
    )
    wait_ready(cached2.url + "/readyz")
    bench.run(cached2, script, 32, seconds=2)
    two, one = bench.alternate((cached2, READ_PATH), (cached, READ_PATH), script, 32)
    results.append(compare("cached read, 2 workers vs 1 (c=32)", two, one, target="scaling"))
    memory["workers_2"] = cached2.memory()
    cached2.stop()

    say("two instances on one Redis, cached read, 16 connections each")
    memory["two_instances"] = two_instances(
        r,
        redis_proc.url,
        sandbox.url,
        lambda proc, seconds: bench.run(proc, script, 16, seconds=seconds or bench.seconds),
        say,
    )
    say("invalidation delay between two instances (send via A, read via B)")
    memory["invalidation"] = invalidation_delay(r, redis_proc.url, say)
    memory["final"] = {p.name: p.memory() for p in r.procs}
    for proc in (cached, cold):
        log = proc.log.read_text(errors="replace")
        memory.setdefault("internal_errors", {})[proc.name] = log.count(
            '"error_id":"internal_error"'
        )
        memory.setdefault("redis_down_events", {})[proc.name] = log.count(
            '"event":"store.redis_down"'
        )
    return results, memory


def many_customers(bench: Bench, cached: Proc, client: redis.Redis, r: Rig) -> dict[str, Any]:
    many = customer_tokens(10_000, prefix="many")
    script = write_script(r.workdir, "tokens-10000", many, READ_PATH)
    before_entries = cache_entries(client)
    settle_keys(client)
    before = int(client.info("memory")["used_memory"])
    offset = 0
    for _ in range(5):
        # Each run goes on where the last one stopped, so every customer is reached.
        script = write_script(r.workdir, "tokens-10000", many, READ_PATH, offset=offset)
        offset += bench.run(cached, script, 32, seconds=max(4, bench.seconds // 2)).requests
        if cache_entries(client) - before_entries >= 10_000:
            break
    settle_keys(client)
    after = int(client.info("memory")["used_memory"])
    entries = cache_entries(client) - before_entries
    sample = [
        k for _, k in zip(range(200), client.scan_iter(match="rb:*:c:*", count=1000), strict=False)
    ]
    usage = [int(client.memory_usage(k) or 0) for k in sample]
    workers = cached.memory()
    return {
        "customers": 10_000,
        "new_entries": entries,
        "used_memory_delta_bytes": after - before,
        "bytes_per_entry_info": round((after - before) / entries) if entries else None,
        "bytes_per_entry_memory_usage": round(sum(usage) / len(usage)) if usage else None,
        "worker": workers,
        "worker_peak_rss_mb": max(w["hwm_kib"] for w in workers) / 1024,
    }


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"\nMachine: {m['nproc']} cores, {m['cpu']}, {m['memory_gib']} GiB, Python {m['python']}, "
        f"load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}"
    )
    header = (
        f"{'scenario':<42} {'broker req/s':>12} {'base req/s':>11} {'ratio':>6} "
        f"{'b p50':>7} {'b p99':>7} {'base p50':>8} {'base p99':>8} {'p99 x':>6} {'err':>4}"
    )
    print(header)
    print("-" * len(header))
    for s in report["scenarios"]:
        b, a = s["broker"], s["baseline"]
        print(
            f"{s['scenario']:<42} {b['rps']:>12.0f} {a['rps']:>11.0f} {s['rps_ratio']:>6.2f} "
            f"{b['p50_ms']:>7.2f} {b['p99_ms']:>7.2f} {a['p50_ms']:>8.2f} {a['p99_ms']:>8.2f} "
            f"{s['p99_ratio']:>6.2f} {b['errors'] + a['errors']:>4}"
            + (f"  added p50 {s['added_p50_ms']:.3f} ms" if "added_p50_ms" in s else "")
        )
    mem = report["memory"]
    print(
        f"\n10,000 customers cached: {mem['new_entries']} entries, Redis "
        f"{mem['bytes_per_entry_info']} B/entry (INFO delta), "
        f"{mem['bytes_per_entry_memory_usage']} B/entry (MEMORY USAGE); "
        f"worker peak RSS {mem['worker_peak_rss_mb']:.1f} MB"
    )
    print(
        "peak RSS per worker (MB): "
        + ", ".join(
            f"{name}: " + "/".join(f"{w['hwm_kib'] / 1024:.1f}" for w in workers)
            for name, workers in mem["final"].items()
        )
    )
    print(
        f"internal errors logged: {mem['internal_errors']}; "
        f"store.redis_down events: {mem['redis_down_events']}"
    )
    two = mem.get("two_instances")
    if two:
        print(
            f"two instances, cached read: {two['rps_total']:.0f} req/s in all, "
            f"errors {two['errors']}"
        )
    inval = mem.get("invalidation")
    if inval:
        delay = inval["b_serves_new_list_ms"]
        msg = inval["pubsub_message_after_answer_ms"]
        print(
            f"invalidation, {inval['rounds']} sends via A: B serves the new list after p50 "
            f"{delay['p50']} ms, p99 {delay['p99']} ms, max {delay['max']} ms (contract 250 ms); "
            f"first read on B stale {inval['first_read_on_b_was_stale']} times; pub/sub message "
            f"p50 {msg['p50']} ms, p99 {msg['p99']} ms after A's answer"
        )
    print(f"elapsed: {report['elapsed_s']} s")


if __name__ == "__main__":
    sys.exit(main())
