"""The benchmark rig: processes on loopback (redis, sandbox, brokers, baselines) and wrk runs.

Every process is started here as a subprocess and stopped by its own PID; every wrk run is
bounded by its duration (and a hard timeout on top).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.rules.tokens import TokenMinter
from tests.servers import free_port, wait_for_port
from tests.support import SHOP, broker_env, make_settings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VERSION = "v2023061"
READ_PATH = f"/api/{VERSION}/{SHOP}/CustomerReferrals2"
WRITE_PATH = f"/api/{VERSION}/{SHOP}/Refer2"


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    return path


def customer_tokens(count: int, prefix: str = "cust") -> list[str]:
    """``count`` valid customer tokens for distinct customers, good for an hour."""
    minter = TokenMinter(make_settings())
    return [minter.customer_token(f"{prefix}-{i}", ttl=3600).token for i in range(count)]


@dataclass
class Proc:
    """A server subprocess on a loopback port, with its output in a file."""

    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The worker processes: the descendants of the started process, or itself alone."""
        children = _descendants(self.popen.pid)
        return children or [self.popen.pid]

    def memory(self) -> list[dict[str, int]]:
        """Per worker: peak (VmHWM) and current (VmRSS) resident memory in KiB."""
        return [_status_kib(pid) for pid in self.pids()]

    def stop(self) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return self.popen.returncode


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found.extend(kids)
        frontier.extend(kids)
    # A supervisor's helpers (uvicorn's multiprocessing resource tracker) are no workers.
    return [p for p in found if "resource_tracker" not in _cmdline(p)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _status_kib(pid: int) -> dict[str, int]:
    values = {"pid": pid, "hwm_kib": 0, "rss_kib": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                values["hwm_kib"] = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                values["rss_kib"] = int(line.split()[1])
    return values


@dataclass
class Rig:
    """Owns the temporary directory and every process started for one benchmark run."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="broker-bench-")))
    procs: list[Proc] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str], port: int | None = None
    ) -> Proc:
        port = port or free_port()
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(self.workdir)),
            "PYTHONPATH": str(ROOT),
            **env,
            "PORT": str(port),
        }
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv), env=full_env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT
            )
        proc = Proc(name, port, popen, log)
        self.procs.append(proc)
        try:
            wait_for_port(port, timeout=30)
        except TimeoutError:
            raise RuntimeError(f"{name} did not start:\n{log.read_text()[-2000:]}") from None
        return proc

    def sandbox(self, *, fast: bool) -> Proc:
        env = broker_env(SANDBOX_FAST="1" if fast else "0", SANDBOX_SEED="1")
        return self.start(
            "sandbox-fast" if fast else "sandbox", [str(BIN / "broker"), "sandbox"], env
        )

    def broker(
        self, name: str, redis_url: str, upstream: str, workers: int = 1, **overrides: str
    ) -> Proc:
        metrics_dir = self.workdir / f"metrics-{name}"
        settings = {
            "BROKER_UPSTREAM_URL": upstream,
            "REDIS_URL": redis_url,
            "WEB_CONCURRENCY": str(workers),
            # Limits on, high enough never to refuse the load.
            "BROKER_RATE_LIMIT_READ": "1000000/1s",
            "BROKER_RATE_LIMIT_WRITE": "1000000/1s",
            "BROKER_TOKEN_MAX_TTL": "3600",
            "LOG_FORMAT": "json",
            # As the container image sets it (deploy/Dockerfile): metrics shared by workers.
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        env = broker_env(**{**settings, **overrides})
        # The request log goes to a file, as a container's stdout would go to a pipe.
        return self.start(name, [str(BIN / "broker"), "serve"], env)

    def baseline(self, kind: str, workers: int = 1, **env: str) -> Proc:
        argv = [sys.executable, "-m", "tests.benchmarks.baselines", kind]
        return self.start(f"baseline-{kind}", argv, {"WEB_CONCURRENCY": str(workers), **env})

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop_all()
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- wrk --------------------------------------------------------------------------------------

LUA = """
local tokens = {%(tokens)s}
local n = #tokens
local i = %(offset)d
local path = "%(path)s"
local body = "{}"
request = function()
  i = i + 1
  local t = tokens[(i %% n) + 1]
  return wrk.format("POST", path, {["Authorization"] = "Bearer " .. t,
    ["Content-Type"] = "application/json"}, body)
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


@dataclass
class WrkScript:
    path: Path
    count: int


def write_script(
    workdir: Path, name: str, tokens: Sequence[str], path: str, offset: int = 0
) -> WrkScript:
    """A wrk script that rotates through ``tokens``, starting after ``offset`` of them."""
    listed = ",".join(f'"{t}"' for t in tokens)
    script = workdir / f"{name}.lua"
    script.write_text(LUA % {"tokens": listed, "offset": offset, "path": path})
    return WrkScript(script, len(tokens))


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int  # socket errors, time-outs and non-2xx/3xx answers
    raw: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "raw"}


_LATENCY_LINE = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RPS_LINE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> WrkResult:
    """wrk's ``--latency`` text, with the exact numbers of the script's ``done`` line."""
    rps_match = _RPS_LINE.search(output)
    text_pct = {m[1]: float(m[2]) * _UNIT[m[3]] for m in _LATENCY_LINE.finditer(output)}
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH ")), None)
    if line is None or rps_match is None:
        raise RuntimeError(f"wrk output not understood:\n{output}")
    raw = json.loads(line[6:])
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    rps = raw["requests"] / (raw["duration_us"] / 1e6) if raw["duration_us"] else 0.0
    return WrkResult(
        rps=round(rps, 1),
        p50_ms=raw["p50_us"] / 1000 if raw["p50_us"] else text_pct.get("50", 0.0),
        p90_ms=raw["p90_us"] / 1000 if raw["p90_us"] else text_pct.get("90", 0.0),
        p99_ms=raw["p99_us"] / 1000 if raw["p99_us"] else text_pct.get("99", 0.0),
        max_ms=raw["max_us"] / 1000,
        requests=raw["requests"],
        errors=errors,
        raw=raw,
    )


def run_wrk(url: str, script: WrkScript, *, connections: int, seconds: int) -> WrkResult:
    """One bounded wrk run: one thread, ``connections`` connections, ``seconds`` long."""
    argv = [
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script.path),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    return parse_wrk(done.stdout)


@contextlib.contextmanager
def rig() -> Iterator[Rig]:
    owned = Rig()
    try:
        yield owned
    finally:
        owned.cleanup()


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Until ``/readyz`` (or any path, for a baseline) answers."""
    import httpx2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} is not ready")
