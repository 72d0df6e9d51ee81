"""The unit tier: plain Python, no sockets and no child processes (each test is held to it)."""

from __future__ import annotations

import socket
import subprocess
from typing import NoReturn

import pytest


def refuse(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError(
        "a unit test opened a socket or started a process: it belongs in a higher tier"
    )


@pytest.fixture(autouse=True)
def no_sockets_or_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connecting, binding or starting a process fails the test that tries."""
    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
