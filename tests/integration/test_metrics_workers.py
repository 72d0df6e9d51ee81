"""Metrics in multiprocess mode: worker processes write, another renders their sum."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.unit.test_metrics import value

ROOT = Path(__file__).resolve().parents[2]


def test_multiprocess_workers_are_summed(tmp_path: Path) -> None:
    """Two worker processes write; a third renders the sum, and breakers show any open worker."""
    run_python(WORKER, "3", "open", multiproc_dir=tmp_path)
    run_python(WORKER, "4", "closed", multiproc_dir=tmp_path)
    out = run_python(RENDER, multiproc_dir=tmp_path)
    content_type, _, text = out.partition("\n")
    assert content_type.startswith("text/plain")
    body = text.encode()
    route = "/api/{version}/{shop}/Refer2"
    labels = {"route": route, "method": "POST", "status": "200", "error_id": ""}
    assert value(body, "broker_requests_total", **labels) == 7
    assert value(body, "broker_request_duration_seconds_count", route=route) == 7
    assert value(body, "broker_cache_total", outcome="hit") == 2
    # livemax: 1 when some worker is in that state; each worker's gauges are its own file.
    assert value(body, "broker_breaker_state", name="upstream", state="open") == 1
    assert value(body, "broker_breaker_state", name="upstream", state="closed") == 1
    assert value(body, "broker_breaker_state", name="upstream", state="half_open") == 0


def test_multiprocess_directory_set_after_import(tmp_path: Path) -> None:
    """A directory set after prometheus_client was imported is still used by Metrics()."""
    run_python(LATE_ENV, str(tmp_path), multiproc_dir=None)
    assert list(tmp_path.glob("counter_*.db"))
    body = run_python(RENDER, multiproc_dir=tmp_path).partition("\n")[2].encode()
    assert value(body, "broker_rate_limited_total", policy="write") == 1


WORKER = textwrap.dedent(
    """
    import sys
    from broker.telemetry.metrics import Metrics

    metrics = Metrics()
    route = "/api/{version}/{shop}/Refer2"
    for _ in range(int(sys.argv[1])):
        metrics.observe_request(route=route, method="POST", status=200, error_id=None, seconds=0.01)
    metrics.count_cache("hit")
    metrics.set_breaker("upstream", sys.argv[2])
    metrics.flush()  # as a worker's lifespan does, every second and at exit
    """
)


RENDER = textwrap.dedent(
    """
    import sys
    from broker.telemetry.metrics import Metrics

    body, content_type = Metrics().render()
    sys.stdout.write(content_type + "\\n")
    sys.stdout.buffer.write(body)
    """
)


LATE_ENV = textwrap.dedent(
    """
    import os, sys
    import prometheus_client  # imported before the directory is known, as a server might
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
    from broker.telemetry.metrics import Metrics

    Metrics().count_rate_limited("write")
    """
)


def run_python(script: str, *args: str, multiproc_dir: Path | None) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiproc_dir is not None:
        environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    environ["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
