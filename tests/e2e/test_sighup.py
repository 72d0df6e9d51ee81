"""``broker serve``'s supervisor: SIGHUP reloads a checked configuration without failing a
request, a bad one is logged and the running one kept, a killed worker is logged and replaced.

The configuration that changes lives in the ``.env`` file of the server's working directory
(the process environment, which wins over it, cannot change under a running process).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.serving import (
    Served,
    broker_serve,
    calls_in_a_loop,
    read_to_close,
    wait_for_event,
    worker_pids,
)
from tests.stack import READ_PATH

OLD_ORIGIN = "https://old.example"
NEW_ORIGIN = "https://new.example"


def allows(served: Served, origin: str) -> bool:
    """Whether the broker's answer to a browser route carries CORS headers for ``origin``."""
    answer = httpx2.get(f"{served.url}{READ_PATH}", headers={"Origin": origin}, timeout=5)
    return answer.headers.get("access-control-allow-origin") == origin


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """One worker, its CORS origins read from .env (not from the environment)."""
    (tmp_path / ".env").write_text(f"BROKER_CORS_ORIGINS={OLD_ORIGIN}\n")
    with broker_serve(tmp_path, BROKER_CORS_ORIGINS=None) as running:
        yield running


def hang_up_and_wait(served: Served, event: str, **fields: object) -> dict[str, object]:
    already = sum(1 for e in served.written_events() if e.get("event") == event)
    os.kill(served.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 60
    while True:
        found = [e for e in served.written_events() if e.get("event") == event]
        if len(found) > already:
            return found[-1]
        assert time.monotonic() < deadline, f"no {event} within 60 s of SIGHUP"
        time.sleep(0.1)


def test_sighup_with_one_worker_reloads_without_failing_a_request(served: Served) -> None:
    """With one worker, SIGHUP applies a changed .env while a client loop sees no failure, and
    the server's pid stays the same; the worker is a new process."""
    wait_for_event(served, "broker.started")
    assert allows(served, OLD_ORIGIN) and not allows(served, NEW_ORIGIN)
    (worker,) = worker_pids(served.proc.pid)
    with calls_in_a_loop(
        lambda: httpx2.get(f"{served.url}/healthz", timeout=10).status_code
    ) as seen:
        (served.output.parent / ".env").write_text(f"BROKER_CORS_ORIGINS={NEW_ORIGIN}\n")
        hang_up_and_wait(served, "config.reloaded")
        time.sleep(0.5)
    assert seen.failures == [] and seen.answered > 20
    assert served.proc.poll() is None
    assert allows(served, NEW_ORIGIN) and not allows(served, OLD_ORIGIN)
    assert worker_pids(served.proc.pid) != [worker]


def test_a_connection_accepted_before_a_reload_is_answered_not_cut_off(served: Served) -> None:
    """A connection the old worker accepted, whose request arrives only after the reload told
    that worker to stop, gets its answer (with Connection: close) instead of a closed socket."""
    wait_for_event(served, "broker.started")
    (worker,) = worker_pids(served.proc.pid)
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        time.sleep(0.3)  # accepted by the one worker there is
        os.kill(served.proc.pid, signal.SIGHUP)
        wait_for_event(served, "worker.started", replaces=worker)
        time.sleep(0.5)  # the old worker has been told to stop and no longer accepts
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\n\r\n")
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b"\r\nconnection: close\r\n" in answer.lower()


def test_sighup_with_a_bad_env_file_keeps_the_running_configuration(served: Served) -> None:
    """A .env with a bad value: one logged line names the variable (never the value), the
    reload is refused, and the running configuration and worker stay."""
    wait_for_event(served, "broker.started")
    workers = worker_pids(served.proc.pid)
    (served.output.parent / ".env").write_text(
        f"BROKER_CORS_ORIGINS={NEW_ORIGIN}\nBROKER_TOKEN_TTL=not-a-number-123\n"
    )
    hang_up_and_wait(served, "config.reload_refused")
    problems = [e for e in served.written_events() if e.get("event") == "config.problem"]
    assert [p["variable"] for p in problems] == ["BROKER_TOKEN_TTL"]
    assert problems[0]["level"] == "error"
    assert "not-a-number-123" not in served.output.read_text()
    assert allows(served, OLD_ORIGIN) and not allows(served, NEW_ORIGIN)
    assert worker_pids(served.proc.pid) == workers


def test_a_killed_worker_is_logged_and_replaced(served: Served) -> None:
    """SIGKILL to the worker: the supervisor logs its death with the signal and starts
    another, which serves."""
    wait_for_event(served, "broker.started")
    time.sleep(1)  # the supervisor has seen it serve (it pings every half second)
    (worker,) = worker_pids(served.proc.pid)
    os.kill(worker, signal.SIGKILL)
    died = wait_for_event(served, "worker.died", worker_pid=worker)
    assert died["signal"] == "SIGKILL" and died["level"] == "error"
    deadline = time.monotonic() + 30
    while True:
        workers = worker_pids(served.proc.pid)
        if workers and workers != [worker]:
            try:
                if httpx2.get(f"{served.url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
        assert time.monotonic() < deadline, "no new worker serving within 30 s"
        time.sleep(0.1)
    assert served.proc.poll() is None
