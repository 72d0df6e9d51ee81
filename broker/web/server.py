"""Running the broker: the production server and the in-process servers of ``broker dev``.

``broker serve`` runs uvicorn with :class:`HeaderLimitedProtocol`, which answers 431 and closes
the connection once a request's head passes 16 KiB (httptools alone buffers any size), and
with uvicorn's own log lines routed through the broker's structlog pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from broker.config.settings import Settings
from broker.telemetry.logs import configure_logging, route_stdlib_logging
from broker.web.app import create_app

GRACEFUL_SECONDS = 25  # in-flight requests get this long after SIGTERM; under k8s' 30 s default
MAX_HEADER_BYTES = 16 * 1024  # request line and headers together (spec 3.4)
_HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\n"
    b"connection: close\r\n\r\n"
)

log = structlog.get_logger("broker.server")


class HeaderLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over :data:`MAX_HEADER_BYTES`.

    Bytes are counted from a message's start until its headers are complete; past the limit the
    parser is fed no more, the client gets 431 and the connection is closed, so no more than the
    limit is ever buffered. Once the headers are complete the count stops: the per-request cost
    is one flag test per received chunk and two small overrides. On a kept-alive connection the
    count of the next request starts at the chunk after the one its head begins in, which bounds
    the buffering by the limit plus one read (at most 256 KiB).
    """

    _reading_head = True
    _head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._reading_head:  # the next message on a kept-alive connection
            self._reading_head = True
            self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()

    def _in_head(self) -> bool:
        return self._reading_head

    def data_received(self, data: bytes) -> None:
        if not self._reading_head:
            super().data_received(data)
            return
        room = MAX_HEADER_BYTES - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Feed what fits: if the head ends inside it, the rest is body (or the next request).
        self._head_bytes = MAX_HEADER_BYTES
        if room > 0:
            super().data_received(data[:room])
        if self._in_head():
            if not self.transport.is_closing():
                self.transport.write(_HEADERS_TOO_LARGE)
                self.transport.close()
            return
        super().data_received(data[room:])


def app_factory() -> Starlette:
    """What each worker process of ``broker serve`` builds (read from the environment)."""
    settings = Settings.from_env(strict=False)
    configure_logging(settings.log_level, settings.log_format)
    route_stdlib_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def serve(settings: Settings) -> None:
    """The production server on PORT with WEB_CONCURRENCY workers; SIGTERM drains in-flight work."""
    configure_logging(settings.log_level, settings.log_format)
    route_stdlib_logging(settings.log_level, settings.log_format)
    warn_at_start(settings, os.environ)
    run_factory(
        "broker.web.server:app_factory", port=settings.port, workers=settings.web_concurrency
    )


def warn_at_start(settings: Settings, environ: Mapping[str, str]) -> None:
    """Warnings about a configuration that runs but is probably not what was meant."""
    for name in settings.unknown_variables:
        log.warning(
            "config.unknown_variable",
            variable=name,
            hint="not a variable the broker knows (misspelt?); it is ignored",
        )
    trusted = [part.strip() for part in environ.get("FORWARDED_ALLOW_IPS", "").split(",")]
    if "*" in trusted:
        log.warning(
            "config.forwarded_allow_ips_any",
            variable="FORWARDED_ALLOW_IPS",
            hint="'*' trusts X-Forwarded-For from anyone, so a client can pick its own address "
            "and escape per-address limits; set it to the proxy's address or range",
        )


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
        http=HeaderLimitedProtocol,
        lifespan="on",
        log_config=None,  # the broker routes uvicorn's loggers itself (route_stdlib_logging)
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
