"""deploy/nginx.conf under a real nginx: `nginx -t`, then on loopback in front of a tiny upstream.

nginx runs with a temporary prefix and a wrapper configuration that includes the example (as an
operator would, in the http context), so it needs no root-owned directory. For the live tests
the example's listen address, upstream address and read timeout are swapped for loopback test
values; everything else is the file as shipped.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.servers import free_port, wait_for_port

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


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """deploy/nginx.conf served by a real nginx on loopback, in front of TinyBroker."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), TinyBroker)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    text = EXAMPLE.read_text()
    swaps = {
        r"listen 80;": f"listen 127.0.0.1:{port};",
        r"server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream.server_address[1]};",
        r"proxy_read_timeout 30s;": "proxy_read_timeout 1s;",
    }
    for old, new in swaps.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    site = prefix / "site.conf"
    site.write_text(text)
    main = write_wrapper(prefix, site)
    process = subprocess.Popen(
        nginx_command(prefix, main, "-g", "daemon off;"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # its errors go to error.log under the prefix
    )
    try:
        wait_for_port(port)
        yield Proxy(port)
    finally:
        process.terminate()
        process.wait(timeout=10)
        TinyBroker.release.set()
        upstream.shutdown()
        upstream.server_close()


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


@pytest.mark.parametrize("route", ["tokens", "invalidations", "metrics"])
def test_server_side_routes_get_a_problem_404(proxy: Proxy, route: str) -> None:
    """/tokens, /invalidations and /metrics are never proxied: a problem+json 404."""
    result = proxy.request("POST" if route != "metrics" else "GET", f"/loyalty/{route}")
    assert_problem(*result, 404, "not_found")
