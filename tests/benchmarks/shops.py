"""Many shops from one broker: ``python -m tests.benchmarks.shops [--shops 1000] [--seconds 8]``.

Prints numbers, asserts nothing (targets: 1,000 shops start in under 5 s and cost under 10 KB
each; the hot path within noise of one shop):

- start-up: ``broker serve`` with a shops file of 1 and of N shops, from the process start until
  ``/healthz`` answers;
- memory per shop: the worker's RSS with N shops less its RSS with 1 shop, divided by N - 1
  (after the same warm-up; the supervisor's too, since it parses the file as well);
- cached reads: wrk against one worker on Redis, the same number of customers spread over the N
  shops or all in one shop, every list cached before the runs, runs alternated.

Everything runs on loopback: redis-server, an upstream that answers every call with one small
referral list (the sandbox serves one shop only), and ``broker serve``; every process is stopped
by its own PID, every wrk run is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx2

from broker.config.settings import parse
from broker.rules.tokens import TokenMinter
from tests.benchmarks.rig import BIN, Proc, Rig, WrkScript, _descendants, _status_kib, rig, run_wrk
from tests.servers import RedisProcess

VERSION = "v2023061"
BODY = b'{"referrals": [{"bhid": "r1", "status": "sent"}], "share_action": null}'

LUA = """
local tokens = {%(tokens)s}
local paths = {%(paths)s}
local n = #tokens
local i = 0
request = function()
  i = i + 1
  local k = (i %% n) + 1
  return wrk.format("POST", paths[k], {["Authorization"] = "Bearer " .. tokens[k],
    ["Content-Type"] = "application/json"}, "{}")
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH {\\"requests\\":%%d,\\"duration_us\\":%%d,\\"p50_us\\":%%d,\\"p90_us\\":%%d," ..
    "\\"p99_us\\":%%d,\\"max_us\\":%%d,\\"connect\\":%%d,\\"read\\":%%d,\\"write\\":%%d," ..
    "\\"status\\":%%d,\\"timeout\\":%%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def slug(i: int) -> str:
    return f"shop-{i:04d}"


def shops_file(path: Path, count: int) -> Path:
    """A shops file of ``count`` shops, each with its own signing key, issuer key and origin."""
    tables = []
    for i in range(count):
        secret = base64.b64encode(f"secret-of-{slug(i)}-".encode().ljust(40, b"x")).decode()
        tables.append(
            f"[shops.{slug(i)}]\n"
            f'signing_keys = ["k1:{secret}"]\n'
            f'issuer_keys = ["issuer-key-of-{slug(i)}-0123456789abcdef"]\n'
            f'cors_origins = ["https://{slug(i)}.example"]\n'
        )
    path.write_text("\n".join(tables))
    return path


def environment(file: Path, redis_url: str, upstream: str) -> dict[str, str]:
    return {
        "BROKER_SHOPS_FILE": str(file),
        "BROKER_UPSTREAM_URL": upstream,
        "REDIS_URL": redis_url,
        "WEB_CONCURRENCY": "1",
        "BROKER_RATE_LIMIT_READ": "1000000/1s",
        "BROKER_RATE_LIMIT_WRITE": "1000000/1s",
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
    }


def start_upstream(bench: Rig) -> Proc:
    """A Bubblehouse stand-in answering every call with :data:`BODY` (any shop)."""
    argv = [sys.executable, "-m", "tests.benchmarks.shops", "--upstream"]
    return bench.start("upstream", argv, {})


def serve_upstream(port: int) -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/{version}/{shop}/{function}", answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def start_broker(bench: Rig, name: str, env: dict[str, str]) -> tuple[Proc, float]:
    """``broker serve`` and the seconds from its start until ``/healthz`` answers."""
    started = time.perf_counter()
    proc = bench.start(name, [str(BIN / "broker"), "serve"], env)
    while True:
        try:
            if httpx2.get(f"{proc.url}/healthz", timeout=2).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx2.HTTPError:
            pass
        if time.perf_counter() - started > 60:
            raise RuntimeError(f"{name} did not answer /healthz:\n{proc.log.read_text()[-2000:]}")
        time.sleep(0.02)


def worker_and_supervisor_kib(proc: Proc) -> tuple[int, int]:
    workers = [
        pid
        for pid in _descendants(proc.popen.pid)
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    worker = sum(_status_kib(pid)["rss_kib"] for pid in workers)
    return worker, _status_kib(proc.popen.pid)["rss_kib"]


def readers(env: dict[str, str], customers: int, shops: int) -> tuple[list[str], list[str]]:
    """Tokens and paths of ``customers`` customers spread over the first ``shops`` shops."""
    minter = TokenMinter(parse(env))
    tokens, paths = [], []
    for i in range(customers):
        shop = slug(i % shops)
        tokens.append(minter.customer_token(f"cust-{i}", ttl=3600, shop=shop).token)
        paths.append(f"/api/{VERSION}/{shop}/CustomerReferrals2")
    return tokens, paths


def script(workdir: Path, name: str, tokens: Sequence[str], paths: Sequence[str]) -> WrkScript:
    listed = ",".join(f'"{t}"' for t in tokens)
    where = ",".join(f'"{p}"' for p in paths)
    path = workdir / f"{name}.lua"
    path.write_text(LUA % {"tokens": listed, "paths": where})
    return WrkScript(path, len(tokens))


async def warm(url: str, tokens: Sequence[str], paths: Sequence[str]) -> int:
    """Read every customer's list once (so every run after is a cached read); the failures."""
    failed = 0
    async with httpx2.AsyncClient(base_url=url, timeout=10) as client:
        for token, path in zip(tokens, paths, strict=True):
            answer = await client.post(path, json={}, headers={"Authorization": f"Bearer {token}"})
            failed += answer.status_code != 200
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shops", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upstream:
        import os

        serve_upstream(int(os.environ["PORT"]))
        return 0
    redis_server = RedisProcess().start()
    try:
        with rig() as bench:
            upstream = start_upstream(bench)
            one = environment(
                shops_file(bench.workdir / "one.toml", 1), redis_server.url, upstream.url
            )
            many = environment(
                shops_file(bench.workdir / "many.toml", args.shops), redis_server.url, upstream.url
            )
            print(f"shops file: {(bench.workdir / 'many.toml').stat().st_size / 1024:.0f} KiB")
            results: dict[str, dict[str, float]] = {}
            scripts: dict[str, WrkScript] = {}
            brokers: dict[str, Proc] = {}
            for name, env, spread in (
                ("one shop", one, 1),
                (f"{args.shops} shops", many, args.shops),
            ):
                proc, seconds = start_broker(bench, name.replace(" ", "-"), env)
                tokens, paths = readers(env, args.customers, spread)
                failed = asyncio.run(warm(proc.url, tokens, paths))
                worker, supervisor = worker_and_supervisor_kib(proc)
                results[name] = {
                    "startup_s": seconds,
                    "worker_kib": worker,
                    "supervisor_kib": supervisor,
                    "warm_failures": failed,
                }
                scripts[name] = script(bench.workdir, name.replace(" ", "-"), tokens, paths)
                brokers[name] = proc
                print(
                    f"{name}: /healthz after {seconds:.2f} s; worker RSS {worker / 1024:.1f} MiB, "
                    f"supervisor RSS {supervisor / 1024:.1f} MiB; warm-up failures {failed}",
                    flush=True,
                )
            names = list(results)
            per_shop = (
                (results[names[1]]["worker_kib"] - results[names[0]]["worker_kib"])
                * 1024
                / (args.shops - 1)
            )
            per_shop_sup = (
                (results[names[1]]["supervisor_kib"] - results[names[0]]["supervisor_kib"])
                * 1024
                / (args.shops - 1)
            )
            print(
                f"memory per shop: worker {per_shop / 1024:.2f} KiB, supervisor "
                f"{per_shop_sup / 1024:.2f} KiB"
            )
            rates: dict[str, list[float]] = {name: [] for name in names}
            p99: dict[str, list[float]] = {name: [] for name in names}
            errors: dict[str, int] = dict.fromkeys(names, 0)
            for _ in range(args.rounds):
                for name in names:
                    result = run_wrk(
                        brokers[name].url + "/",
                        scripts[name],
                        connections=args.connections,
                        seconds=args.seconds,
                    )
                    rates[name].append(result.rps)
                    p99[name].append(result.p99_ms)
                    errors[name] += result.errors
                    print(
                        f"  {name}: {result.rps:.0f} req/s, p99 {result.p99_ms:.1f} ms", flush=True
                    )
            for name in names:
                print(
                    f"cached reads, {name} ({args.customers} customers): median "
                    f"{statistics.median(rates[name]):.0f} req/s over {args.rounds} runs "
                    f"{[round(r) for r in rates[name]]}, p99 median "
                    f"{statistics.median(p99[name]):.1f} ms, errors {errors[name]}"
                )
            ratio = statistics.median(rates[names[1]]) / statistics.median(rates[names[0]])
            print(f"throughput {names[1]} / one shop: {ratio:.3f}")
    finally:
        redis_server.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
