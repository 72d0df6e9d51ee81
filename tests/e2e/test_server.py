"""``broker serve`` as a real process: the 16 KiB request-head limit, and its logs on stdout.

Raw sockets where the point is what a client can send that an HTTP client would not. The tests
that leave the server running share one process (started with every setting they look at); a
graceful stop and several workers get a process of their own.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import orjson
import pytest
from structlog.testing import capture_logs

from broker import __version__
from broker.web.server import warn_at_start
from tests.servers import RedisProcess
from tests.serving import Served, broker_serve, read_to_close, stop, worker_pids
from tests.support import ISSUER_KEY, make_settings

MIB = 1024 * 1024

# What the shared server runs with: request lines at debug, a tight limit on failed issuer
# keys, and two settings that start with a warning (the unknown one with a value to look for).
SHARED_ENV = {
    "LOG_LEVEL": "debug",
    "BROKER_RATE_LIMIT_ISSUER": "1/60s",
    "FORWARDED_ALLOW_IPS": "10.0.0.1, *",
    "BROKER_CACHE_TTTL": "5-unique-value",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``broker serve`` with SHARED_ENV for the tests that leave it running."""
    with broker_serve(tmp_path_factory.mktemp("serve"), **SHARED_ENV) as running:
        yield running


def the_worker(served: Served) -> int:
    """The pid of the one worker of a one-worker server (where a request's bytes land)."""
    (pid,) = worker_pids(served.proc.pid)
    return pid


def reset_peak_rss(pid: int) -> None:
    """Bring the process's peak resident memory (VmHWM) down to its current size (Linux:
    ``clear_refs`` 5), so that a peak measured next is this test's own."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def send_huge_head(port: int, total: int, path: str = "/healthz") -> bytes:
    """Send a request whose one header is ``total`` bytes, in pieces; what came back ('' if
    the connection was closed or reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Filler: ".encode())
        piece = b"a" * (64 * 1024)
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < total:
                sock.sendall(piece)
                sent += len(piece)
            sock.sendall(b"\r\n\r\n")
        return read_to_close(sock)


def refused_or_closed(answer: bytes) -> bool:
    return answer == b"" or answer.startswith(b"HTTP/1.1 431 ")


def test_huge_request_head_is_refused_without_being_buffered(served: Served) -> None:
    """A 64 MiB header gets 431 (or a closed connection) and the worker's peak memory stays put."""
    assert httpx2.get(f"{served.url}/healthz").status_code == 200
    worker = the_worker(served)
    reset_peak_rss(worker)
    before = peak_rss_kib(worker)
    answer = send_huge_head(served.port, 64 * MIB)
    after = peak_rss_kib(worker)
    assert refused_or_closed(answer), answer[:200]
    # Buffering the header would add 64 MiB or more; a bounded parser adds next to nothing.
    assert after - before < 16 * 1024, (before, after)
    assert httpx2.get(f"{served.url}/healthz").status_code == 200


def test_oversized_head_on_a_kept_alive_connection_is_refused(served: Served) -> None:
    """After a normal request on the same connection, the next request's huge head is refused."""
    worker = the_worker(served)
    reset_peak_rss(worker)
    before = peak_rss_kib(worker)
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = b""
        while b'"ok"}' not in first:
            first += sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Filler: ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(256):  # up to 16 MiB
                sock.sendall(b"a" * (64 * 1024))
        answer = read_to_close(sock)
    assert refused_or_closed(answer), answer[:200]
    assert peak_rss_kib(worker) - before < 16 * 1024


def test_head_just_over_16_kib_gets_431(served: Served) -> None:
    """17 KiB of headers in one send is answered 431 with Connection: close."""
    answer = send_huge_head(served.port, 17 * 1024)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"connection: close" in answer.lower()


def test_an_8_kib_cookie_and_a_small_body_are_served(served: Served) -> None:
    """Ordinary large headers (an 8 KiB cookie) pass, and a body after them is not counted."""
    cookie = "session=" + "c" * (8 * 1024)
    assert httpx2.get(f"{served.url}/healthz", headers={"Cookie": cookie}).status_code == 200
    response = httpx2.post(
        f"{served.url}/tokens",
        headers={"Cookie": cookie, "Authorization": f"Bearer {ISSUER_KEY}"},
        json={"customer_id": "alice", "email": "a@example.com"},
    )
    assert response.status_code == 200
    with httpx2.Client(base_url=served.url) as client:  # kept alive: several requests
        for _ in range(3):
            assert client.get("/healthz", headers={"Cookie": cookie}).status_code == 200


def test_head_limit_holds_with_several_workers(tmp_path: Path) -> None:
    """With WEB_CONCURRENCY=2 (and the Redis it needs), every worker refuses an oversized head."""
    redis = RedisProcess().start()
    try:
        with broker_serve(tmp_path, WEB_CONCURRENCY="2", REDIS_URL=redis.url) as served:
            deadline = time.monotonic() + 30
            while httpx2.get(f"{served.url}/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            for _ in range(4):  # connections are spread over the workers
                assert refused_or_closed(send_huge_head(served.port, 4 * MIB))
            assert httpx2.get(f"{served.url}/healthz").status_code == 200
    finally:
        redis.cleanup()


def test_every_line_of_a_json_run_is_json(tmp_path: Path) -> None:
    """uvicorn's own 'Invalid HTTP request received.' comes out as JSON like every other line."""
    with broker_serve(tmp_path) as served:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):
                sock.recv(1024)
        httpx2.get(f"{served.url}/nowhere")
        code = stop(served.proc)
    assert code == 0
    lines = served.lines()
    assert lines
    events = [orjson.loads(line) for line in lines]  # raises on any line that is not JSON
    invalid = [e for e in events if "Invalid HTTP request" in str(e.get("event"))]
    assert invalid and invalid[0]["logger"] == "uvicorn.error"
    assert invalid[0]["level"] == "warning"
    for event in events:
        assert isinstance(event["pid"], int) and event["version"] == __version__
    # The supervisor's own lines and uvicorn's (at info) are JSON too.
    supervisor = [e for e in events if e["pid"] == served.proc.pid]
    assert {"supervisor.started", "worker.started", "supervisor.stopped"} <= {
        e["event"] for e in supervisor
    }
    assert any(e.get("logger") == "uvicorn.error" and e["level"] == "info" for e in supervisor)
    assert any(e["event"] == "broker.stopped" for e in events)


def test_request_lines_are_levelled_by_outcome(served: Served) -> None:
    """5xx error, failed issuer keys and 429s warning, probes and scrapes debug, the rest info."""
    with httpx2.Client(base_url=served.url) as client:
        client.get("/healthz", headers={"X-Request-ID": "probe"})
        client.get("/readyz", headers={"X-Request-ID": "ready"})
        client.get("/metrics", headers={"X-Request-ID": "scrape"})
        client.get("/nowhere", headers={"X-Request-ID": "missing"})
        wrong = {"Authorization": "Bearer wrong-key-0123456789abcdef"}
        bad = client.post("/tokens", headers={**wrong, "X-Request-ID": "bad-key"})
        limited = client.post("/tokens", headers={**wrong, "X-Request-ID": "limited"})
        assert (bad.status_code, limited.status_code) == (401, 429)
        token = client.post(
            "/tokens",
            headers={"Authorization": f"Bearer {ISSUER_KEY}", "X-Request-ID": "mint"},
            json={"customer_id": "alice"},
        ).json()["token"]
        # The upstream (port 9 on loopback) is down: 503 upstream_unavailable.
        read = client.post(
            "/api/v2023061/test-shop/CustomerReferrals2",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "down"},
        )
        assert read.status_code == 503
    expected = {
        "probe": "debug",
        "ready": "debug",
        "scrape": "debug",
        "missing": "info",
        "bad-key": "warning",
        "limited": "warning",
        "mint": "info",
        "down": "error",
    }
    # The line is written once the answer is sent: wait for the last one to be in the file.
    deadline = time.monotonic() + 10
    while True:
        levels = {
            e["request_id"]: e["level"]
            for e in served.written_events()
            if e["event"] == "request" and e.get("request_id") in expected
        }
        if len(levels) == len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert levels == expected


def test_serve_warns_when_forwarded_headers_are_trusted_from_anyone(served: Served) -> None:
    """FORWARDED_ALLOW_IPS containing '*' starts, with a warning naming the variable."""
    assert httpx2.get(f"{served.url}/healthz").status_code == 200
    events = served.written_events()
    warnings = [e for e in events if e["event"] == "config.forwarded_allow_ips_any"]
    assert warnings and warnings[0]["variable"] == "FORWARDED_ALLOW_IPS"
    assert warnings[0]["level"] == "warning"


@pytest.mark.parametrize("value", ["*", "10.0.0.1, *"])
def test_forwarded_headers_trusted_from_anyone_are_warned_about(value: str) -> None:
    """Any FORWARDED_ALLOW_IPS list containing '*' gets the start-up warning naming the variable."""
    with capture_logs() as logs:
        warn_at_start(make_settings(), {"FORWARDED_ALLOW_IPS": value})
    warnings = [e for e in logs if e["event"] == "config.forwarded_allow_ips_any"]
    assert warnings and warnings[0]["variable"] == "FORWARDED_ALLOW_IPS"
    assert warnings[0]["log_level"] == "warning"


def test_forwarded_headers_trusted_from_a_proxy_are_not_warned_about() -> None:
    """FORWARDED_ALLOW_IPS naming the proxy's addresses (no '*') starts without that warning."""
    with capture_logs() as logs:
        warn_at_start(make_settings(), {"FORWARDED_ALLOW_IPS": "10.0.0.1, 10.0.0.2"})
    assert not [e for e in logs if e["event"] == "config.forwarded_allow_ips_any"]


def test_serve_warns_about_an_unknown_broker_variable(served: Served) -> None:
    """A misspelt BROKER_ variable does not stop serve; a warning names it, never its value."""
    assert httpx2.get(f"{served.url}/healthz").status_code == 200
    warnings = [e for e in served.written_events() if e["event"] == "config.unknown_variable"]
    assert [w["variable"] for w in warnings] == ["BROKER_CACHE_TTTL"]
    assert warnings[0]["level"] == "warning"
    assert "5-unique-value" not in served.output.read_text()
