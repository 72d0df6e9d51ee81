"""``broker serve`` as a real process, for the end-to-end tests: start it on a free port with
its output in a file, find its workers, stop it by its pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import orjson

from tests.servers import free_port, wait_for_port
from tests.support import broker_env

BROKER = str(Path(sys.executable).parent / "broker")
TIMED_OUT = b"<no answer, connection still open>"


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    output: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        return self.output.read_text(encoding="utf-8").splitlines()

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines()]

    def written_events(self) -> list[dict[str, Any]]:
        """The events of the lines written so far, while the server may still be writing one."""
        written = self.output.read_text(encoding="utf-8").rpartition("\n")[0]
        return [orjson.loads(line) for line in written.splitlines()]


def child_env(**overrides: str) -> dict[str, str]:
    """The test process's environment minus any broker variable, plus the given ones."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BROKER_", "REDIS_URL", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"))
    }
    env.update(overrides)
    return env


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


@contextlib.contextmanager
def broker_serve(tmp_path: Path, **env: str | None) -> Iterator[Served]:
    """``broker serve`` on a free port, stdout and stderr together in a file; a variable given
    as ``None`` is left out of its environment."""
    port = free_port()
    output = tmp_path / f"serve-{port}.log"
    given = {name: value for name, value in env.items() if value is not None}
    environ = child_env(**broker_env(PORT=str(port), LOG_FORMAT="json", **given))
    for name in env.keys() - given.keys():
        environ.pop(name, None)
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [BROKER, "serve"],
            env=environ,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        wait_for_port(port, timeout=30)
        yield Served(proc, port, output)
    finally:
        stop(proc)


def worker_pids(pid: int) -> list[int]:
    """The pids of the server's workers (its children, less multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = []
    for child in children:
        with contextlib.suppress(FileNotFoundError):
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(int(child))
    return workers


def wait_for_event(
    served: Served, event: str, timeout: float = 30, **fields: Any
) -> dict[str, Any]:
    """The first logged event named ``event`` with ``fields``, waiting up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        for logged in served.written_events():
            if logged.get("event") == event and all(logged.get(k) == v for k, v in fields.items()):
                return logged
        assert time.monotonic() < deadline, f"no {event} {fields} in {timeout} s"
        time.sleep(0.1)


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection; a server that
    keeps the connection open without answering gives TIMED_OUT."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return TIMED_OUT
    return answer


class Loop:
    """What a client calling in a loop saw: the calls answered, and every failure."""

    def __init__(self) -> None:
        self.answered = 0
        self.failures: list[str] = []


@contextlib.contextmanager
def calls_in_a_loop(call: Callable[[], int]) -> Iterator[Loop]:
    """Run ``call`` (which returns a status) over and over in a thread until the block ends;
    a status other than 200 or an HTTP error is a failure."""
    seen, stop = Loop(), threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                status = call()
            except httpx2.HTTPError as exc:
                seen.failures.append(repr(exc))
                continue
            if status != 200:
                seen.failures.append(str(status))
            seen.answered += 1

    client = threading.Thread(target=loop)
    client.start()
    try:
        yield seen
    finally:
        stop.set()
        client.join(timeout=30)
