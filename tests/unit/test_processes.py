"""The scrape-time collectors: the build's version and each live worker's process metrics."""

from __future__ import annotations

import os
from pathlib import Path

from broker.telemetry.processes import BuildInfo, WorkerProcesses, live_pids


def test_build_info_carries_the_version() -> None:
    """broker_build_info is 1, labelled with the version it was given."""
    [family] = list(BuildInfo("9.9.9").collect())
    [sample] = family.samples
    assert (sample.name, sample.labels, sample.value) == (
        "broker_build_info",
        {"version": "9.9.9"},
        1,
    )


def test_live_pids_are_read_off_the_live_gauge_files(tmp_path: Path) -> None:
    """Only gauge_live* files name a live worker; other files and other names are ignored."""
    for name in ("gauge_livesum_12.db", "gauge_livemax_12.db", "gauge_liveall_7.db"):
        (tmp_path / name).write_bytes(b"")
    for name in ("counter_99.db", "gauge_all_5.db", "gauge_live_x.db", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert live_pids(str(tmp_path)) == [7, 12]


def test_each_live_worker_is_reported_by_pid(tmp_path: Path) -> None:
    """Each live pid's process metrics come labelled with it; a pid that is gone adds nothing."""
    alive, gone = os.getpid(), 2**22 + 1  # above the kernel's largest pid
    for pid in (alive, gone):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
    families = {f.name: f for f in WorkerProcesses(str(tmp_path)).collect()}
    memory = families["process_resident_memory_bytes"]
    assert {s.labels["pid"] for s in memory.samples} == {str(alive)}
    assert all(s.value > 0 for s in memory.samples)
    assert "process_open_fds" in families
