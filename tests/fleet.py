"""Several `broker serve` processes on one Redis (or Redis Cluster), for scale-out tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2

from broker.tokens import TokenMinter
from tests.conftest import broker_env, make_settings
from tests.servers import free_port, wait_for_port

BROKER = str(Path(sys.executable).parent / "broker")


class Fleet:
    """Running broker processes, a client for each, and a token minter for them."""

    def __init__(self, urls: list[str], logs: list[Path]) -> None:
        self.urls = urls
        self.logs = logs
        self.clients = [httpx2.Client(base_url=url, timeout=30) for url in urls]
        self.minter = TokenMinter(make_settings())

    def auth(self, customer: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.minter.customer_token(customer).token}"}

    def close(self) -> None:
        for client in self.clients:
            client.close()


@contextlib.contextmanager
def fleet_of(
    count: int, upstream: str, redis_url: str, workdir: Path, **env: str
) -> Iterator[Fleet]:
    """``count`` broker processes on their own ports, stopped by their PIDs on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    logs: list[Path] = []
    env_base = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    try:
        for index in range(count):
            port = free_port()
            full = {
                **env_base,
                **broker_env(
                    BROKER_UPSTREAM_URL=upstream, REDIS_URL=redis_url, PORT=str(port), **env
                ),
            }
            log = workdir / f"broker-{index}.log"
            logs.append(log)
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [BROKER, "serve"],
                        env=full,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=workdir,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_for_port(int(url.rsplit(":", 1)[1]), timeout=30)
        running = Fleet(urls, logs)
        try:
            yield running
        finally:
            running.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
