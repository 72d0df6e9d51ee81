"""/readyz tells Redis's real state within 5 s with no traffic at all (the Store's probe)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from tests.servers import RedisProcess
from tests.stack import Broker, Sandbox, running_broker


def redis_state(broker: Broker) -> str:
    """What /readyz says of Redis; it always answers 200 while the broker runs."""
    response = broker.client.get("/readyz")
    assert response.status_code == 200
    state: str = response.json()["redis"]
    return state


def wait_for_state(broker: Broker, wanted: str, timeout: float = 5.0) -> None:
    """Poll /readyz (which never touches Redis) until it reports ``wanted``."""
    deadline = time.monotonic() + timeout
    while redis_state(broker) != wanted:
        assert time.monotonic() < deadline, f"/readyz did not say redis {wanted} in {timeout}s"
        time.sleep(0.05)


def test_killed_redis_is_reported_down_then_up_without_traffic(
    sandbox: Sandbox, redis_server: RedisProcess
) -> None:
    """With no request at all, a stopped Redis shows as down within 5 s, and up again within
    5 s of its restart."""
    with running_broker(sandbox.url, REDIS_URL=redis_server.url) as broker:
        assert redis_state(broker) == "up"
        redis_server.stop()
        wait_for_state(broker, "down")
        redis_server.start()
        wait_for_state(broker, "up")
        assert sandbox.total_calls() == 0  # no API traffic went through the broker


def test_frozen_redis_is_reported_down(sandbox: Sandbox, redis_server: RedisProcess) -> None:
    """A Redis that keeps its connections open but answers nothing (SIGSTOP) shows as down
    within 5 s, and up again once it answers (SIGCONT)."""
    assert redis_server.proc is not None
    with (
        capture_logs() as events,
        running_broker(sandbox.url, REDIS_URL=redis_server.url) as broker,
    ):
        assert redis_state(broker) == "up"
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for_state(broker, "down")
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        wait_for_state(broker, "up")
    names = [e["event"] for e in events]
    assert names.count("store.redis_down") == 1


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A TCP listener on loopback that accepts connections and never answers: its redis:// URL."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        server.close()


def test_silent_listener_is_reported_down(sandbox: Sandbox, silent_listener: str) -> None:
    """A REDIS_URL whose listener accepts and never replies is down within 5 s, and reads are
    still answered."""
    with running_broker(sandbox.url, REDIS_URL=silent_listener) as broker:
        wait_for_state(broker, "down")
        assert broker.read().status_code == 200
        assert redis_state(broker) == "down"
