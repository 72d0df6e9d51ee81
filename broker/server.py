"""Running the broker: the production server and the in-process servers of ``broker dev``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from broker.app import create_app
from broker.logs import configure_logging
from broker.settings import Settings

GRACEFUL_SECONDS = 25  # in-flight requests get this long after SIGTERM; under k8s' 30 s default


def app_factory() -> Starlette:
    """What each worker process of ``broker serve`` builds (read from the environment)."""
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def serve(settings: Settings) -> None:
    """The production server on PORT with WEB_CONCURRENCY workers; SIGTERM drains in-flight work."""
    run_factory("broker.server:app_factory", port=settings.port, workers=settings.web_concurrency)


def run_factory(factory: str, *, port: int, workers: int, host: str = "0.0.0.0") -> None:
    """Serve the ASGI app that ``factory`` (``module:function``) builds, as ``broker serve`` does.

    The benchmarks run their baselines through this too, so that both sides of a comparison
    share one server and its settings. Access logs are off (the app writes its own request
    line); forwarded headers are trusted from ``FORWARDED_ALLOW_IPS`` (default 127.0.0.1).
    uvicorn was chosen by measurement: granian served the broker no faster here
    (docs/benchmarks.md), and one server is one dependency fewer.
    """
    _fresh_metrics_dir()
    _run_uvicorn(factory, host=host, port=port, workers=workers)


def _run_uvicorn(factory: str, *, host: str, port: int, workers: int) -> None:
    """uvicorn with uvloop and httptools, SIGTERM drains in-flight work.

    uvicorn re-raises the stop signal once it has drained; the handlers set here receive it, so
    a graceful stop exits with status 0 instead of dying by the signal.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _drained)
    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        proxy_headers=True,
        server_header=False,
        date_header=True,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        timeout_keep_alive=30,
        backlog=2048,
    )


def _fresh_metrics_dir() -> None:
    """Multi-process metrics live in files: start each run with none left from a previous one."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for leftover in path.glob("*.db"):
        leftover.unlink(missing_ok=True)


def _drained(signum: int, frame: object) -> None:
    """The stop signal, re-raised by uvicorn after a graceful shutdown: nothing left to do."""


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to its owner (several share one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_together(apps: Sequence[tuple[Any, str, int]]) -> None:
    """Serve several ASGI apps on one event loop until SIGINT or SIGTERM."""
    servers = [
        _Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                lifespan="on",
                access_log=False,
                log_level="warning",
                timeout_graceful_shutdown=5,
            )
        )
        for app, host, port in apps
    ]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(server.serve() for server in servers))
