"""The process that owns the listening socket and the workers of ``broker serve`` (spec 7).

:class:`Supervisor` is uvicorn's multi-process supervisor, run for any number of workers (one
included), so that the process an orchestrator started never serves a request itself and
outlives its workers:

- **SIGHUP** re-reads the configuration (the ``.env`` file under the environment the server
  started with, as :meth:`Settings.from_env` does, and the shops file ``BROKER_SHOPS_FILE``
  names) in the supervisor, before any worker sees it. A configuration with problems is
  logged, one line per problem, and the running one kept. A good one is handed to new
  workers, which replace the old ones one at a time: a new worker starts, the supervisor waits
  until it serves, then the old one drains and stops. The listening socket stays open
  throughout, so no connection is refused.
- **A worker that dies** is logged with its exit status or signal, its metrics files are marked
  dead (its gauges stop counting), and it is replaced. One that dies again soon after starting
  (it cannot start: a bad configuration of its environment, an import error) is retried after
  a growing pause (:data:`BACKOFF_FIRST` doubling to :data:`BACKOFF_MAX`), never in a loop.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from socket import socket
from typing import Any

import structlog
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from broker.config.settings import ConfigError, Settings
from broker.telemetry.logs import configure_logging, route_stdlib_logging

READY_SECONDS = 60.0  # a new worker has this long to serve before a reload gives up on it
STEADY_SECONDS = 10.0  # a worker that lived this long died of something else than its start
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0

log = structlog.get_logger("broker.supervisor")


def read_environment(base: Mapping[str, str], env_file: str | Path = ".env") -> dict[str, str]:
    """The variables as :meth:`Settings.from_env` sees them: the file under the environment."""
    merged: dict[str, str] = {}
    if Path(env_file).is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(base)
    return merged


@dataclass(frozen=True)
class WorkerApp:
    """The app factory a worker runs: the checked variables (and the shops file's checked text)
    travel with it to the worker, so a worker never reads a ``.env`` or a shops file that
    changed after the supervisor checked it."""

    environ: dict[str, str] = field(repr=False)
    shops_text: str | None = field(default=None, repr=False)

    def __call__(self) -> Starlette:
        from broker.web.app import create_app

        # A hang-up meant for the supervisor (a terminal's, a process group's) is not ours.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        settings = Settings.from_env(
            self.environ, env_file=None, strict=False, shops_text=self.shops_text
        )
        configure_logging(settings.log_level, settings.log_format)
        route_stdlib_logging(settings.log_level, settings.log_format)
        return create_app(settings)


def exit_reason(exitcode: int | None) -> dict[str, Any]:
    """The fields that say why a worker process ended."""
    if exitcode is None:
        return {"reason": "did not answer the supervisor's health check; killed"}
    if exitcode < 0:
        name = signal.Signals(-exitcode).name
        return {"signal": name, "reason": f"killed by {name}"}
    if exitcode == STARTUP_FAILURE:
        return {"exit_status": exitcode, "reason": "could not start (its own lines above say why)"}
    return {"exit_status": exitcode, "reason": f"exited with status {exitcode}"}


class Supervisor(Multiprocess):
    """uvicorn's supervisor with checked reloads on SIGHUP, logged deaths and respawn back-off.

    ``reload`` reads and checks the configuration, returning the :class:`Config` new workers
    get, or ``None`` when it has problems (it logs them). ``on_exit`` hears the pid of every
    worker that is gone (to mark its metrics files dead).
    """

    def __init__(
        self,
        config: Config,
        sockets: list[socket],
        *,
        reload: Callable[[], tuple[Config, int] | None] | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(config, sockets)
        self.reload = reload
        self.on_exit = on_exit
        self._started: dict[int, float] = {}  # slot: when its worker was started
        self._failures: dict[int, int] = {}  # slot: deaths in a row soon after starting
        self._respawn_at: dict[int, float] = {}  # slot: when its next worker may start
        self._ready: set[int] = set()  # slots whose worker has served

    def run(self) -> None:
        log.info("supervisor.started", workers=self.processes_num)
        super().run()
        for process in self.processes:
            self._gone(process)
        log.info("supervisor.stopped")

    def init_processes(self) -> None:
        for slot in range(self.processes_num):
            self.processes.append(self._spawn(slot))

    def _spawn(self, slot: int) -> Process:
        process = Process(self.config, self.sockets)
        process.start()
        self._started[slot] = time.monotonic()
        self._ready.discard(slot)
        log.info("worker.started", worker_pid=process.pid, slot=slot)
        return process

    def _gone(self, process: Process) -> None:
        if process.pid is not None and self.on_exit is not None:
            self.on_exit(process.pid)

    def _retire(self, process: Process) -> None:
        """Stop a worker gracefully (in-flight requests finish) and wait for it."""
        process.terminate()
        process.join()
        self._gone(process)
        log.info("worker.retired", worker_pid=process.pid)

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        now = time.monotonic()
        for slot, process in enumerate(self.processes):
            due = self._respawn_at.get(slot)
            if due is not None:
                if now >= due:
                    del self._respawn_at[slot]
                    self.processes[slot] = self._spawn(slot)
                continue
            if slot not in self._ready:
                if process.is_ready(timeout=self.config.timeout_worker_healthcheck):
                    self._ready.add(slot)
                    continue
                starting = now - self._started.get(slot, now) < READY_SECONDS
                if process.process.is_alive() and starting:
                    continue
            elif process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                if now - self._started.get(slot, now) >= STEADY_SECONDS:
                    self._failures.pop(slot, None)
                continue
            self._lost(slot, process, now)

    def _lost(self, slot: int, process: Process, now: float) -> None:
        """A worker that died, hung, or never came up: log why, then replace it (at once if it
        had served, after a growing pause if it never did)."""
        exitcode = process.exitcode
        process.kill()
        process.join()
        self._gone(process)
        if self.should_exit.is_set():
            return
        lived = now - self._started.get(slot, now)
        fields = {"worker_pid": process.pid, "slot": slot, "lived_s": round(lived, 1)}
        if slot in self._ready and exitcode != STARTUP_FAILURE:
            log.error("worker.died", **fields, **exit_reason(exitcode))
            self.processes[slot] = self._spawn(slot)
            return
        failures = self._failures[slot] = self._failures.get(slot, 0) + 1
        pause = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1))
        self._respawn_at[slot] = now + pause
        log.error("worker.start_failed", **fields, **exit_reason(exitcode), retry_in_s=pause)

    def handle_hup(self) -> None:
        log.info("config.reload_requested")
        if self.reload is None:
            return
        checked = self.reload()
        if checked is None:
            log.error("config.reload_refused", kept="the running configuration")
            return
        self.config, workers = checked
        if self._roll(workers):
            log.info("config.reloaded", workers=self.processes_num)

    def _roll(self, workers: int) -> bool:
        """Replace each worker by one with the new configuration, one at a time; then start or
        stop workers to reach ``workers``. False when a new worker did not come up."""
        for slot in range(len(self.processes)):
            if self.should_exit.is_set():
                return False
            self._respawn_at.pop(slot, None)
            if not self._replace(slot):
                return False
        while len(self.processes) < workers and not self.should_exit.is_set():
            slot = len(self.processes)
            process = self._spawn(slot)
            self.processes.append(process)
            if process.wait_until_ready(READY_SECONDS, self.should_exit):
                self._ready.add(slot)
        while len(self.processes) > workers:
            self._ready.discard(len(self.processes) - 1)
            self._respawn_at.pop(len(self.processes) - 1, None)
            self._retire(self.processes.pop())
        self.processes_num = len(self.processes)
        return True

    def _replace(self, slot: int) -> bool:
        new = Process(self.config, self.sockets)
        new.start()
        if not new.wait_until_ready(READY_SECONDS, self.should_exit):
            exitcode = new.exitcode
            new.kill()
            new.join()
            self._gone(new)
            if not self.should_exit.is_set():
                log.error(
                    "config.reload_failed",
                    worker_pid=new.pid,
                    **exit_reason(exitcode),
                    kept=f"worker {self.processes[slot].pid} and the workers not yet replaced",
                )
            return False
        old = self.processes[slot]
        self.processes[slot] = new
        self._started[slot] = time.monotonic()
        self._ready.add(slot)
        self._failures.pop(slot, None)
        log.info("worker.started", worker_pid=new.pid, slot=slot, replaces=old.pid)
        if old.process.is_alive():
            self._retire(old)
        return True


def check_reload(
    base: Mapping[str, str],
    running: Settings,
    make_config: Callable[[dict[str, str], Settings], Config],
) -> tuple[Config, int] | None:
    """Read and check the configuration for a reload: the workers' config and count, or ``None``
    after logging each problem (one line each, naming the variable, never its value)."""
    environ = read_environment(base)
    try:
        settings = Settings.from_env(environ, env_file=None, strict=False)
    except ConfigError as exc:
        for problem in exc.problems:
            variable, _, message = problem.partition(": ")
            log.error("config.problem", variable=variable, problem=message or problem)
        return None
    for name, before, after in (
        ("HOST", running.host, settings.host),
        ("PORT", running.port, settings.port),
    ):
        if before != after:
            log.warning("config.needs_restart", variable=name, hint="kept until a restart")
    configure_logging(settings.log_level, settings.log_format)
    route_stdlib_logging(settings.log_level, settings.log_format)
    return make_config(environ, settings), settings.web_concurrency


def mark_dead(directory: str) -> Callable[[int], None]:
    """What to do with a gone worker's pid: drop its live gauges from the metrics files."""

    def gone(pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]  # untyped upstream

    return gone
