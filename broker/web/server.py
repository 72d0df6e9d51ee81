"""Running the broker: the production server and the in-process servers of ``broker dev``.

``broker serve`` binds ``HOST``:``PORT`` in a supervisor process (:mod:`broker.web.supervisor`)
that runs ``WEB_CONCURRENCY`` workers, one included, and reloads them on SIGHUP. Each worker is
uvicorn with :class:`~broker.web.connections.BoundedProtocol` (head size, deadlines and the
connection bound of spec 3.4), and uvicorn's own log lines go through the broker's structlog
pipeline. The workers share their metrics through files in ``PROMETHEUS_MULTIPROC_DIR``: a
private directory made (and removed at exit) when it is not set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import tempfile
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from uvicorn.config import Config

from broker.config.settings import Settings
from broker.telemetry.logs import configure_logging, route_stdlib_logging
from broker.telemetry.metrics import MULTIPROC_ENV
from broker.web.connections import IDLE_SECONDS, RESERVE, BoundedProtocol
from broker.web.supervisor import (
    Supervisor,
    WorkerApp,
    check_reload,
    mark_dead,
    read_environment,
)

GRACEFUL_SECONDS = 25  # in-flight requests get this long after SIGTERM; under k8s' 30 s default

log = structlog.get_logger("broker.server")


def serve(settings: Settings, *, host: str | None = None) -> None:
    """The production server on HOST:PORT with WEB_CONCURRENCY workers; SIGTERM drains
    in-flight work, SIGHUP reloads the configuration."""
    configure_logging(settings.log_level, settings.log_format)
    route_stdlib_logging(settings.log_level, settings.log_format)
    warn_at_start(settings, os.environ)
    base = dict(os.environ)  # what a reload reads the .env file under
    bind = host or settings.host

    def make_config(environ: dict[str, str], checked: Settings) -> Config:
        return server_config(
            WorkerApp(environ, checked.shops_text),
            host=bind,
            port=settings.port,
            workers=checked.web_concurrency,
            max_connections=checked.max_connections,
        )

    def reload() -> tuple[Config, int] | None:
        return check_reload(base, settings, make_config)

    _supervise(make_config(read_environment(base), settings), reload, settings.max_connections)


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
    """Serve the ASGI app that ``factory`` (``module:function``) builds, as ``broker serve`` does
    (without reloads).

    The benchmarks run their baselines through this too, so that both sides of a comparison
    share one server and its settings. uvicorn was chosen by measurement: granian served the
    broker no faster here (docs/benchmarks.md), and one server is one dependency fewer.
    """
    config = server_config(factory, host=host, port=port, workers=workers, max_connections=1000)
    _supervise(config, None, 1000)


def server_config(
    app: str | Callable[[], Any], *, host: str, port: int, workers: int, max_connections: int
) -> Config:
    """uvicorn's configuration for a worker: uvloop and the bounded httptools protocol.

    Access logs are off (the app writes its own request line); forwarded headers are trusted
    from ``FORWARDED_ALLOW_IPS`` (default 127.0.0.1); ``limit_concurrency`` carries
    ``BROKER_MAX_CONNECTIONS`` to the protocol.
    """
    return Config(
        app,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=BoundedProtocol,
        ws="none",
        lifespan="on",
        log_config=None,  # the broker routes uvicorn's loggers itself (route_stdlib_logging)
        access_log=False,
        proxy_headers=True,
        server_header=False,
        date_header=True,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        timeout_keep_alive=IDLE_SECONDS,
        limit_concurrency=max_connections,
        backlog=2048,
    )


def _supervise(
    config: Config, reload: Callable[[], tuple[Config, int] | None] | None, max_connections: int
) -> None:
    """Bind the socket, run the supervisor until SIGTERM or SIGINT, then clean up.

    uvicorn's workers re-raise the stop signal once they have drained; the supervisor's own
    handlers are uvicorn's, and it exits with status 0 after its workers.
    """
    _raise_open_files(max_connections * config.workers)
    with metrics_directory() as directory:
        sock = config.bind_socket()
        try:
            Supervisor(config, [sock], reload=reload, on_exit=mark_dead(directory)).run()
        finally:
            sock.close()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def _raise_open_files(connections: int) -> None:
    """Let the process hold the connections it may accept (each is a file descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + RESERVE + 256  # plus Redis, the upstream pool, files
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """The workers' shared metrics directory: ``PROMETHEUS_MULTIPROC_DIR`` emptied of a previous
    run's files, or, when it is not set, a private one removed at exit."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for leftover in path.glob("*.db"):
            leftover.unlink(missing_ok=True)
        yield given
        return
    made = tempfile.mkdtemp(prefix="broker-metrics-")
    os.environ[MULTIPROC_ENV] = made
    try:
        yield made
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(made, ignore_errors=True)


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
