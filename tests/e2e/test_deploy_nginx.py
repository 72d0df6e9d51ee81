"""deploy/nginx.conf under a real nginx: `nginx -t`, then on loopback in front of a tiny upstream.

nginx runs with a temporary prefix and a wrapper configuration that includes the example (as an
operator would, in the http context), so it needs no root-owned directory. For the live tests
the example's listen address, upstream address and read timeout are swapped for loopback test
values; everything else is the file as shipped.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from broker.rules.tokens import TokenMinter
from tests.servers import RedisProcess, free_port, wait_for_port
from tests.stack import READ_PATH, Sandbox
from tests.support import broker_env, make_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "nginx.conf"
PROBLEM_MEMBERS = {"type", "title", "status", "id", "message", "retryable", "request_id"}


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("nginx is not installed: run bash scripts/setup --test")
    return found


def write_wrapper(prefix: Path, site: Path) -> Path:
    """A main configuration whose http context includes ``site``; every path under ``prefix``."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx would switch its workers to "nobody", who cannot enter pytest's directories.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = prefix / "main.conf"
    main.write_text(
        f"{user}pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'};\n"
        "worker_processes 1;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        "    access_log off;\n"
        f"{temp}\n"
        f"    include {site};\n"
        "}\n"
    )
    return main


def nginx_command(prefix: Path, main: Path, *extra: str) -> list[str]:
    return [
        nginx_binary(),
        "-p",
        str(prefix),
        "-e",
        str(prefix / "error.log"),
        "-c",
        str(main),
        *extra,
    ]


def test_example_passes_nginx_t(tmp_path: Path) -> None:
    """`nginx -t` accepts deploy/nginx.conf as shipped, included in an http context."""
    main = write_wrapper(tmp_path, EXAMPLE)
    result = subprocess.run(
        nginx_command(tmp_path, main, "-t"), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_catches_a_broken_example(tmp_path: Path) -> None:
    """The same check fails on a directive nginx does not know (it is a real check)."""
    broken = tmp_path / "site.conf"
    broken.write_text(EXAMPLE.read_text().replace("proxy_cache off;", "proxy_cahce off;"))
    result = subprocess.run(
        nginx_command(tmp_path, write_wrapper(tmp_path, broken), "-t"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "proxy_cahce" in result.stderr


# -- live ------------------------------------------------------------------------------------


class TinyBroker(BaseHTTPRequestHandler):
    """Stands in for the broker: echoes what reached it, or misbehaves on purpose."""

    release = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/api/hang":
            self.release.wait(5)  # longer than the test's proxy_read_timeout
            return
        if self.path == "/api/drop":
            self.close_connection = True
            self.connection.shutdown(2)  # no answer at all: nginx's own 502
            return
        if self.path == "/api/own-error":
            self.answer(502, "application/problem+json", {"id": "upstream_error", "by": "broker"})
            return
        seen: dict[str, object] = {
            "path": self.path,
            "request_id": self.headers.get("X-Request-ID"),
        }
        self.answer(200, "application/json", seen)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.answer(200, "application/json", {"path": self.path, "method": "POST"})

    def answer(self, status: int, content_type: str, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Proxy:
    port: int

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()


def render(*, public: int, private: int, instances: tuple[int, int], **swaps: str) -> str:
    """deploy/nginx.conf with loopback test ports (and any further exact swaps); each swapped
    text must be in the file, so a change to the shipped file cannot silently skip one."""
    text = EXAMPLE.read_text()
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{public};",
        "listen 127.0.0.1:8080;": f"listen 127.0.0.1:{private};",
        "127.0.0.1:8000": f"127.0.0.1:{instances[0]}",
        "127.0.0.1:8001": f"127.0.0.1:{instances[1]}",
        **swaps,
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def running_nginx(prefix: Path, site_text: str, *ports: int) -> Iterator[Path]:
    """A real nginx serving ``site_text`` under ``prefix``; stopped by its PID. Yields the
    error log's path."""
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / "site.conf"
    site.write_text(site_text)
    main = write_wrapper(prefix, site)
    process = subprocess.Popen(
        nginx_command(prefix, main, "-g", "daemon off;"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # its errors go to error.log under the prefix
    )
    try:
        for port in ports:
            wait_for_port(port)
        yield prefix / "error.log"
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class Proxies:
    public: Proxy
    private: Proxy


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxies]:
    """deploy/nginx.conf served by a real nginx on loopback, both instances of its pool pointing
    at TinyBroker. The pool's failure accounting is off here (max_fails=0): these tests break
    the upstream on purpose and must not take it out of the pool for the tests after them; the
    live rolling-restart test below runs the accounting as shipped."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), TinyBroker)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    tiny = upstream.server_address[1]
    public, private = free_port(), free_port()
    text = render(
        public=public,
        private=private,
        instances=(tiny, tiny),
        **{"proxy_read_timeout 30s;": "proxy_read_timeout 1s;", "max_fails=1": "max_fails=0"},
    )
    try:
        with running_nginx(tmp_path_factory.mktemp("nginx"), text, public, private):
            yield Proxies(Proxy(public), Proxy(private))
    finally:
        TinyBroker.release.set()
        upstream.shutdown()
        upstream.server_close()


@pytest.fixture(scope="module")
def proxy(proxies: Proxies) -> Proxy:
    """The public server of :func:`proxies`: what a shopper's browser reaches."""
    return proxies.public


def assert_problem(
    status: int, headers: dict[str, str], body: bytes, expected: int, id: str
) -> None:
    assert status == expected
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert set(problem) == PROBLEM_MEMBERS
    assert (problem["status"], problem["id"]) == (expected, id)
    assert problem["type"] == f"urn:referral-broker:error:{id}"
    assert problem["request_id"] == headers["x-request-id"]


def test_proxy_strips_the_mount_and_passes_the_request_id(proxy: Proxy) -> None:
    """/loyalty/api/... reaches the broker as /api/... with the caller's X-Request-ID."""
    status, _, body = proxy.request(
        "GET", "/loyalty/api/v1/shop/X", headers={"X-Request-ID": "r-1"}
    )
    assert status == 200
    assert json.loads(body) == {"path": "/api/v1/shop/X", "request_id": "r-1"}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("function", ["CustomerReferrals2", "Refer2"])
def test_proxy_strips_the_mount_for_both_calls(proxy: Proxy, method: str, function: str) -> None:
    """Both calls reach the broker as /api/... with their query string, by either method: the
    read through its own location (where nginx may pass a sent POST on), Refer2 through the
    general one."""
    status, _, body = proxy.request(
        method,
        f"/loyalty/api/v2023061/shop/{function}?a=1",
        body=b"{}" if method == "POST" else None,
        headers={"Content-Type": "application/json"},
    )
    assert status == 200
    assert json.loads(body)["path"] == f"/api/v2023061/shop/{function}?a=1"


def test_proxy_replaces_a_request_id_the_broker_would_refuse(proxy: Proxy) -> None:
    """An X-Request-ID with a quote is replaced by nginx's own id, so it never breaks the JSON."""
    status, _, body = proxy.request("GET", "/loyalty/api/x", headers={"X-Request-ID": 'a"b'})
    assert status == 200
    assert re.fullmatch(r"[0-9a-f]{32}", json.loads(body)["request_id"])


def test_oversized_body_gets_a_problem_413(proxy: Proxy) -> None:
    """A body over client_max_body_size gets nginx's 413 as problem+json, not an HTML page."""
    result = proxy.request(
        "POST",
        "/loyalty/api/v1/shop/Refer2",
        body=b"{" + b" " * 70_000 + b"}",
        headers={"Content-Type": "application/json", "X-Request-ID": "big-1"},
    )
    assert_problem(*result, 413, "payload_too_large")
    assert json.loads(result[2])["request_id"] == "big-1"


def test_broker_without_an_answer_gets_a_problem_502(proxy: Proxy) -> None:
    """A broker that drops the connection gets nginx's 502 as retryable problem+json."""
    result = proxy.request("GET", "/loyalty/api/drop")
    assert_problem(*result, 502, "upstream_error")
    assert json.loads(result[2])["retryable"] is True


def test_slow_broker_gets_a_problem_504(proxy: Proxy) -> None:
    """A broker slower than proxy_read_timeout gets nginx's 504 as retryable problem+json."""
    result = proxy.request("GET", "/loyalty/api/hang")
    assert_problem(*result, 504, "upstream_timeout")
    assert json.loads(result[2])["retryable"] is True


def test_broker_errors_pass_through_untouched(proxy: Proxy) -> None:
    """The broker's own 502 reaches the caller as the broker wrote it."""
    status, _, body = proxy.request("GET", "/loyalty/api/own-error")
    assert status == 502
    assert json.loads(body) == {"id": "upstream_error", "by": "broker"}


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("POST", "tokens"),
        ("POST", "invalidations"),
        ("GET", "metrics"),
        ("GET", "healthz"),
        ("GET", "readyz"),
        ("GET", "openapi.json"),
        ("GET", "anything-else"),
    ],
)
def test_private_routes_are_off_the_public_site(proxy: Proxy, method: str, route: str) -> None:
    """/tokens, /invalidations, /metrics, the probes and /openapi.json are never proxied from
    the public server: a problem+json 404."""
    result = proxy.request(method, f"/loyalty/{route}")
    assert_problem(*result, 404, "not_found")


@pytest.mark.parametrize("route", ["static/manifest.json", "shopify/token"])
def test_public_site_passes_the_browser_routes(proxy: Proxy, route: str) -> None:
    """The static files and the Shopify app proxy's route reach the broker from the public site."""
    status, _, body = proxy.request("GET", f"/loyalty/{route}")
    assert status == 200
    assert json.loads(body)["path"] == f"/{route}"


@pytest.mark.parametrize("route", ["tokens", "invalidations"])
def test_private_server_passes_the_merchant_calls(proxies: Proxies, route: str) -> None:
    """The private server passes the merchant server's POST /tokens and /invalidations on."""
    status, _, body = proxies.private.request("POST", f"/{route}", body=b"{}")
    assert status == 200
    assert json.loads(body) == {"path": f"/{route}", "method": "POST"}


def test_private_server_refuses_other_methods_and_paths(proxies: Proxies) -> None:
    """GET /tokens and unknown paths on the private server get the problem+json 404."""
    assert_problem(*proxies.private.request("GET", "/tokens"), 404, "not_found")
    assert_problem(*proxies.private.request("GET", "/api/v1/shop/X"), 404, "not_found")


def test_oversized_header_line_gets_a_problem_431(proxy: Proxy) -> None:
    """A header line over nginx's buffer gets 431 problem+json, not nginx's HTML 400."""
    result = proxy.request(
        "GET", "/loyalty/api/x", headers={"X-Big": "a" * 9000, "X-Request-ID": "hdr-1"}
    )
    assert_problem(*result, 431, "request_headers_too_large")


def test_oversized_head_in_many_lines_gets_a_problem_431(proxy: Proxy) -> None:
    """Headers of 4 KiB each adding up past 16 KiB get 431 problem+json as well."""
    headers = {f"X-Part-{i}": "b" * 4000 for i in range(5)}
    result = proxy.request("GET", "/loyalty/api/x", headers=headers)
    assert_problem(*result, 431, "request_headers_too_large")


def test_head_under_the_limit_reaches_the_broker(proxy: Proxy) -> None:
    """Headers adding up to 12 KiB pass (the limit does not refuse a normal large cookie)."""
    headers = {f"X-Part-{i}": "c" * 4000 for i in range(3)}
    status, _, _ = proxy.request("GET", "/loyalty/api/x", headers=headers)
    assert status == 200


# -- live, in front of two real brokers --------------------------------------------------------

BROKER = str(Path(sys.executable).parent / "broker")
FAIL_TIMEOUT = re.compile(r"fail_timeout=(\d+)s")


class Instance:
    """One `broker serve` of the pool, on a fixed port, as systemd would run it: stopped with
    SIGTERM, started again with the same environment (its own metrics directory)."""

    def __init__(self, port: int, env: dict[str, str], workdir: Path) -> None:
        self.port, self.env, self.workdir = port, env, workdir
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"broker-{self.port}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [BROKER, "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    def ready(self, timeout: float = 30) -> None:
        """Until /readyz answers 200 with Redis up (what the runbook's restart waits for)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                status, _, body = Proxy(self.port).request("GET", "/readyz")
                if status == 200 and json.loads(body).get("redis") == "up":
                    return
            time.sleep(0.1)
        raise TimeoutError(f"broker on {self.port} not ready after {timeout} s")

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM, then wait for the drain to end (by this process's PID only)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def served_requests(self) -> int:
        """`request` events of storefront reads in this start's log."""
        lines = self.log.read_text(errors="replace").splitlines()
        return sum('"request"' in line and "CustomerReferrals2" in line for line in lines)


class Storefront:
    """Shoppers reading their referrals through nginx, from a few threads, until stopped;
    bounded by ``limit`` seconds whatever happens."""

    def __init__(self, port: int, path: str, token: str, threads: int = 4) -> None:
        self.port, self.path, self.token, self.threads = port, path, token, threads
        self.stop_event = threading.Event()
        self.outcomes: list[int | str] = []
        self.lock = threading.Lock()
        self.workers: list[threading.Thread] = []

    def _loop(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        proxy = Proxy(self.port)
        reads = 0
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            reads += 1
            # GET, and POST as the storefront client reads: nginx passes on a sent read
            # (CustomerReferrals2's own location) that a stopping instance reset.
            method, body = ("GET", None) if reads % 2 else ("POST", b"{}")
            try:
                status, _, _ = proxy.request(
                    method,
                    self.path,
                    body=body,
                    headers={
                        "Authorization": f"Bearer {self.token}",
                        "Content-Type": "application/json",
                    },
                )
                outcome: int | str = status
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            with self.lock:
                self.outcomes.append(outcome)
            time.sleep(0.01)

    def start(self, limit: float) -> None:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._loop, args=(limit,), daemon=True)
            worker.start()
            self.workers.append(worker)

    def finish(self) -> None:
        self.stop_event.set()
        for worker in self.workers:
            worker.join(timeout=15)


@pytest.mark.slow
def test_rolling_restart_behind_nginx_fails_no_storefront_read(
    tmp_path: Path, redis_server: RedisProcess, sandbox: Sandbox
) -> None:
    """The shipped nginx.conf in front of two `broker serve` of three workers each: restarting
    them one after the other (SIGTERM, wait, start, /readyz, fail_timeout) under a loop of
    storefront reads fails none of them, and both instances serve again afterwards; each
    instance's metrics are reachable through the private server only."""
    text = EXAMPLE.read_text()
    spacing = int(FAIL_TIMEOUT.findall(text)[0]) + 1
    ports = (free_port(), free_port())
    public, private = free_port(), free_port()
    outer = ("BROKER_", "REDIS_URL", "WEB_CONCURRENCY", "PORT", "PROMETHEUS_MULTIPROC_DIR")
    base = {k: v for k, v in os.environ.items() if not k.startswith(outer)}
    instances = []
    for port in ports:
        env = {
            **base,
            **broker_env(
                BROKER_UPSTREAM_URL=sandbox.url,  # reset: no fault of an earlier test
                REDIS_URL=redis_server.url,
                BROKER_RATE_LIMIT_READ="0",  # one customer reads in a loop: no limit here
                PORT=str(port),
                HOST="127.0.0.1",
                WEB_CONCURRENCY="3",
                LOG_LEVEL="info",
                PROMETHEUS_MULTIPROC_DIR=str(tmp_path / f"metrics-{port}"),
            ),
        }
        instances.append(Instance(port, env, tmp_path))
    token = TokenMinter(make_settings()).customer_token("rolling-1").token
    storefront = Storefront(public, f"/loyalty{READ_PATH}", token)
    site = render(public=public, private=private, instances=ports)
    try:
        for instance in instances:
            instance.start()
        for instance in instances:
            instance.ready()
        with running_nginx(tmp_path / "nginx", site, public, private):
            storefront.start(limit=120)
            time.sleep(1)
            for instance in instances:
                assert instance.stop() == 0
                instance.start()
                instance.ready()
                time.sleep(spacing)
            storefront.finish()
            for path in ("/instances/8000/metrics", "/instances/8001/metrics"):
                status, _, body = Proxy(private).request("GET", path)
                assert status == 200 and b"broker_breaker_state{" in body, path
            assert Proxy(public).request("GET", "/loyalty/metrics")[0] == 404
    finally:
        storefront.finish()
        for instance in instances:
            if instance.proc is not None and instance.proc.poll() is None:
                instance.stop()
    failed = [outcome for outcome in storefront.outcomes if outcome != 200]
    assert len(storefront.outcomes) > 200, len(storefront.outcomes)
    assert failed == [], f"{len(failed)} of {len(storefront.outcomes)} failed: {failed[:10]}"
    assert all(instance.served_requests() > 0 for instance in instances)
