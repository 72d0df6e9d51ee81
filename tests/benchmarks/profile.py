"""Profile a broker worker under load: ``python -m tests.benchmarks.profile cached|cold [secs]``.

Starts redis, the fast sandbox and one broker (``broker serve``, 1 worker), drives it with wrk
at 32 connections and records the worker with py-spy (``uv pip install py-spy``; not a project
dependency). Prints the functions with the most inclusive and self samples, and leaves the
collapsed stacks in ``bench-results/profile-<kind>.txt``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from tests.benchmarks.rig import (
    READ_PATH,
    ROOT,
    customer_tokens,
    rig,
    run_wrk,
    wait_ready,
    write_script,
)
from tests.servers import RedisProcess


def summarize(collapsed: Path, top: int = 40) -> None:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    print(f"\n{total} samples\n-- inclusive --")
    for frame, count in inclusive.most_common(top):
        print(f"{100 * count / total:5.1f}%  {frame}")
    print("-- self --")
    for frame, count in own.most_common(top):
        print(f"{100 * count / total:5.1f}%  {frame}")


def main() -> int:
    kind = sys.argv[1] if len(sys.argv) > 1 else "cached"
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    collapsed = out / f"profile-{kind}.txt"
    redis_proc = RedisProcess().start()
    try:
        with rig() as r:
            sandbox = r.sandbox(fast=True)
            ttl = "3600" if kind == "cached" else "0"
            broker = r.broker("broker", redis_proc.url, sandbox.url, BROKER_CACHE_TTL=ttl)
            wait_ready(broker.url + "/readyz")
            tokens = customer_tokens(1000)
            script = write_script(r.workdir, "tokens", tokens, READ_PATH)
            run_wrk(broker.url + READ_PATH, script, connections=32, seconds=2)
            pid = broker.pids()[0]
            record = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    str(collapsed),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result: dict[str, object] = {}
            load = threading.Thread(
                target=lambda: result.update(
                    r=run_wrk(broker.url + READ_PATH, script, connections=32, seconds=seconds + 1)
                )
            )
            load.start()
            record.wait(timeout=seconds + 60)
            load.join()
            print(result["r"])
    finally:
        redis_proc.cleanup()
    summarize(collapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
