"""``broker serve``'s bounds on connections (spec 3.4), from raw sockets on loopback.

Deadlines: no complete head within 10 s of connecting (or of the last answer) closes the
connection, so does an idle kept-alive connection after 5 s; a body that does not arrive in
10 s gets 408. Bounds: a head beginning after an earlier request is held to 16 KiB too; a
worker holds BROKER_MAX_CONNECTIONS connections, answers 503 at once beyond, and /healthz
answers throughout. Each test bounds its own time.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import orjson
import pytest

from tests.serving import Served, broker_serve
from tests.support import ISSUER_KEY

HEAD = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``broker serve`` with the default settings, one worker."""
    with broker_serve(tmp_path_factory.mktemp("connections")) as running:
        yield running


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def seconds_until_closed(sock: socket.socket, trickle: bytes = b"", every: float = 0.0) -> float:
    """Seconds until the server closes the connection, sending ``trickle`` one byte every
    ``every`` seconds meanwhile; what arrives is read and dropped."""
    started = time.monotonic()
    sock.settimeout(every or 20)
    sent = 0
    while time.monotonic() - started < 20:
        if sent < len(trickle):
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(trickle[sent : sent + 1])
            sent += 1
        try:
            if sock.recv(65536) == b"":
                break
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
    return time.monotonic() - started


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer (head and a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ).split(b":")[1]
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_silent_connection_is_closed_after_ten_seconds(served: Served) -> None:
    """A connection that never sends a byte is closed about 10 s after it was accepted."""
    with connect(served.port) as sock:
        assert 9 <= seconds_until_closed(sock) <= 13


def test_a_trickled_head_is_closed_after_ten_seconds(served: Served) -> None:
    """A head sent one byte every 2 s (never idle 5 s) is cut off 10 s after connecting."""
    with connect(served.port) as sock:
        assert 9 <= seconds_until_closed(sock, HEAD, every=2.0) <= 13


def test_an_idle_kept_alive_connection_is_closed_after_five_seconds(served: Served) -> None:
    """After an answer, a kept-alive connection that sends nothing is closed in about 5 s."""
    with connect(served.port) as sock:
        sock.sendall(HEAD)
        assert read_answer(sock).startswith(b"HTTP/1.1 200 ")
        assert 4 <= seconds_until_closed(sock) <= 7


def test_a_trickled_head_after_an_answer_is_closed_ten_seconds_after_it(served: Served) -> None:
    """The head deadline restarts at each answer: the next trickled head gets 10 s too."""
    with connect(served.port) as sock:
        sock.sendall(HEAD)
        assert read_answer(sock).startswith(b"HTTP/1.1 200 ")
        assert 9 <= seconds_until_closed(sock, HEAD, every=2.0) <= 13


def test_a_body_that_does_not_arrive_gets_408(served: Served) -> None:
    """A POST whose announced body never comes is answered 408 about 10 s after its head."""
    with connect(served.port) as sock:
        sock.sendall(
            b"POST /tokens HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + ISSUER_KEY.encode() + b"\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        answer = read_answer(sock)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["status"] == 408
    assert 9 <= waited <= 13


def test_an_unfinished_head_after_a_request_is_held_to_16_kib(served: Served) -> None:
    """A request, then 60 KB of a head in the same send: the first is answered, the second
    refused (431 or closed) at once, not buffered until a deadline."""
    with connect(served.port) as sock:
        sock.sendall(HEAD + b"GET /healthz HTTP/1.1\r\nX-Filler: " + b"a" * 60_000)
        started = time.monotonic()
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
        waited = time.monotonic() - started
    first, _, rest = answer.partition(b'"ok"}')
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest == b"" or rest.startswith(b"HTTP/1.1 431 "), rest[:200]
    assert waited < 3


def test_healthz_answers_with_300_idle_connections_open(served: Served) -> None:
    """300 connections that send nothing leave /healthz and a normal route answering at once."""
    idle = [connect(served.port) for _ in range(300)]
    try:
        started = time.monotonic()
        assert httpx2.get(f"{served.url}/healthz", timeout=5).status_code == 200
        assert httpx2.get(f"{served.url}/readyz", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
    finally:
        for sock in idle:
            sock.close()


def test_past_the_connection_limit_requests_get_503_and_healthz_answers(tmp_path: Path) -> None:
    """BROKER_MAX_CONNECTIONS=20: with 20 idle connections open, a request is answered 503 at
    once (problem+json), /healthz 200; past the reserve a connection gets 503 unasked."""
    with broker_serve(tmp_path, BROKER_MAX_CONNECTIONS="20") as served:
        idle = [connect(served.port) for _ in range(20)]
        try:
            time.sleep(0.2)  # the worker has accepted them
            started = time.monotonic()
            busy = httpx2.get(f"{served.url}/readyz", timeout=5)
            assert time.monotonic() - started < 1
            assert busy.status_code == 503
            assert busy.headers["content-type"] == "application/problem+json"
            assert busy.json()["request_id"] == busy.headers["x-request-id"]
            assert httpx2.get(f"{served.url}/healthz", timeout=5).status_code == 200
            # The reserve (64 more) is for /healthz; beyond it, 503 as soon as accepted.
            idle += [connect(served.port) for _ in range(64)]
            time.sleep(0.2)
            with connect(served.port) as extra:
                extra.settimeout(5)
                assert extra.recv(65536).startswith(b"HTTP/1.1 503 ")
        finally:
            for sock in idle:
                sock.close()
        # Once they are gone, requests are served again.
        deadline = time.monotonic() + 5
        while httpx2.get(f"{served.url}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_slow_clients_do_not_hold_the_worker(served: Served) -> None:
    """20 trickling clients (1 byte every 2 s) are all cut off within 13 s while requests
    are served meanwhile."""
    durations: list[float] = []

    def trickle() -> None:
        with connect(served.port) as sock:
            durations.append(seconds_until_closed(sock, HEAD * 2, every=2.0))

    threads = [threading.Thread(target=trickle) for _ in range(20)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    assert httpx2.get(f"{served.url}/healthz", timeout=5).status_code == 200
    for thread in threads:
        thread.join(timeout=20)
    assert len(durations) == 20 and max(durations) <= 13
