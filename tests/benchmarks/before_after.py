"""The broker of another source tree against this one, in one run: ``python -m
tests.benchmarks.before_after OTHER_TREE [--seconds S] [--rounds R]``.

``OTHER_TREE`` is a checkout of an earlier version (for example ``git worktree add ../before
<commit>``). Both brokers run with ``broker serve``'s settings from this virtualenv, the older
one with its own source tree first on ``PYTHONPATH``; the same Redis, the same fast sandbox and
the same two baselines serve both. Scenarios: the cached read and the cold read at 32
connections, and the cold read at one connection (added latency over the sandbox itself).
Runs alternate (before, after, baseline) and the table shows medians.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import redis

from tests.benchmarks.__main__ import Bench, median_of
from tests.benchmarks.baselines import BODY_KEY
from tests.benchmarks.rig import (
    READ_PATH,
    ROOT,
    Proc,
    Rig,
    WrkResult,
    customer_tokens,
    rig,
    wait_ready,
    write_script,
)
from tests.servers import RedisProcess
from tests.support import broker_env

SERVE = "import sys; from broker.cli import main; sys.exit(main(['serve']))"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.before_after")
    parser.add_argument("before", help="source tree of the earlier version")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    before_tree = Path(args.before).resolve()
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)

    redis_proc = RedisProcess().start()
    rows: list[dict[str, Any]] = []
    try:
        with rig() as r:
            bench = Bench(r, seconds=args.seconds, rounds=args.rounds, say=say)
            sandbox = r.sandbox(fast=True)
            tokens = customer_tokens(1000)
            read_url = sandbox.url + READ_PATH
            body = httpx2.post(
                read_url, headers={"Authorization": f"Bearer {tokens[0]}"}, json={}
            ).content
            redis.Redis.from_url(redis_proc.url).set(BODY_KEY, body)
            procs: dict[str, Proc] = {}
            for label, tree in (("before", before_tree), ("after", ROOT)):
                for kind, ttl in (("cached", "3600"), ("cold", "0")):
                    procs[f"{label}-{kind}"] = start_tree(
                        r, f"{label}-{kind}", tree, redis_proc.url, sandbox.url, ttl
                    )
            base_redis = r.baseline("redis", BASELINE_REDIS_URL=redis_proc.url)
            base_http = r.baseline(
                "aiohttp", BASELINE_UPSTREAM_URL=read_url, BASELINE_TOKEN=tokens[0]
            )
            for proc in procs.values():
                wait_ready(proc.url + "/readyz")
            for proc in (base_redis, base_http):
                wait_ready(proc.url + "/")
            script = write_script(r.workdir, "tokens-1000", tokens, READ_PATH)
            for proc in (*procs.values(), base_redis, base_http):
                bench.run(proc, script, 32, seconds=2)
            for name, kind, baseline, path, connections in (
                ("cached read, c=32", "cached", base_redis, "/", 32),
                ("cold read, c=32", "cold", base_http, "/", 32),
                ("cold read, c=1", "cold", sandbox, READ_PATH, 1),
            ):
                say(name)
                runs: dict[str, list[WrkResult]] = {"before": [], "after": [], "baseline": []}
                for i in range(args.rounds):
                    order = [
                        ("before", procs[f"before-{kind}"], READ_PATH),
                        ("after", procs[f"after-{kind}"], READ_PATH),
                        ("baseline", baseline, path),
                    ]
                    if i % 2:
                        order.reverse()
                    for label, proc, target in order:
                        runs[label].append(bench.run(proc, script, connections, target))
                rows.append({"scenario": name, **{k: median_of(v) for k, v in runs.items()}})
    finally:
        redis_proc.cleanup()
    print()
    print(
        f"{'scenario':<20} {'before req/s':>12} {'after req/s':>12} {'baseline':>9} "
        f"{'before x':>8} {'after x':>8} {'before p50':>10} {'after p50':>10} {'base p50':>9}"
    )
    for row in rows:
        b, a, base = row["before"], row["after"], row["baseline"]
        print(
            f"{row['scenario']:<20} {b['rps']:>12.0f} {a['rps']:>12.0f} {base['rps']:>9.0f} "
            f"{b['rps'] / base['rps']:>8.2f} {a['rps'] / base['rps']:>8.2f} "
            f"{b['p50_ms']:>10.2f} {a['p50_ms']:>10.2f} {base['p50_ms']:>9.2f}"
        )
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    written = out / f"before-after-{time.strftime('%Y%m%d-%H%M%S')}.json"
    written.write_text(json.dumps(rows, indent=2))
    print(f"\nwritten: {written}")
    return 0


def start_tree(r: Rig, name: str, tree: Path, redis_url: str, upstream: str, ttl: str) -> Proc:
    """``broker serve`` of ``tree`` (its package first on the path) with the benchmark's
    settings and the cache TTL given."""
    settings = {
        "BROKER_UPSTREAM_URL": upstream,
        "REDIS_URL": redis_url,
        "WEB_CONCURRENCY": "1",
        "BROKER_RATE_LIMIT_READ": "1000000/1s",
        "BROKER_RATE_LIMIT_WRITE": "1000000/1s",
        "BROKER_TOKEN_MAX_TTL": "3600",
        "BROKER_CACHE_TTL": ttl,
        "LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(r.workdir / f"metrics-{name}"),
    }
    env = broker_env(**settings)
    env["PYTHONPATH"] = str(tree)
    return r.start(name, [sys.executable, "-c", SERVE], env)


if __name__ == "__main__":
    sys.exit(main())
