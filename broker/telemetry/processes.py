"""Collectors computed at scrape time: the build, and the process metrics of every live worker.

prometheus_client's multi-process mode merges the values workers wrote to files, which cannot
hold a process's memory or CPU as of now. :class:`WorkerProcesses` reads them at the scrape
instead, from ``/proc``, for each worker that is alive: the pids of the live gauge files in
the shared directory (a worker's files are marked dead when it is gone), each sample labelled
with its ``pid``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LIVE_FILE = re.compile(r"^gauge_live[a-z]*_(\d+)\.db$")


class BuildInfo(Collector):
    """``broker_build_info{version=...} 1``."""

    def __init__(self, version: str) -> None:
        self.version = version

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "broker_build_info", "The running broker's version (always 1).", labels=("version",)
        )
        family.add_metric((self.version,), 1)
        yield family


def live_pids(directory: str) -> list[int]:
    """The pids with live gauge files in the multi-process directory, ascending."""
    pids = set()
    for path in Path(directory).iterdir():
        match = LIVE_FILE.match(path.name)
        if match:
            pids.add(int(match.group(1)))
    return sorted(pids)


class WorkerProcesses(Collector):
    """``process_*`` (memory, CPU, file descriptors, start time) of each live worker, by pid."""

    def __init__(self, directory: str, proc: str = "/proc") -> None:
        self.directory = directory
        self.proc = proc

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for pid in live_pids(self.directory):
            one = ProcessCollector(pid=lambda pid=pid: pid, proc=self.proc, registry=None)  # type: ignore[misc]  # the default binds the loop's pid
            for family in one.collect():  # nothing for a pid that is gone
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from merged.values()
