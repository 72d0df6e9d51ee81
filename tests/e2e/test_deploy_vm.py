"""The VM deployment's files: deploy/systemd/referral-broker@.service and
deploy/monitoring/prometheus-vm.yaml, against nginx.conf and the broker's own numbers.

The unit is read as systemd reads it (one key may repeat: each Environment= line adds), checked
with `systemd-analyze verify` where systemd is installed, and the Prometheus configuration with
`promtool check config`. The live proof of the pool (a rolling restart behind the shipped
nginx.conf) is tests/e2e/test_deploy_nginx.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from broker.web.server import GRACEFUL_SECONDS
from tests.e2e.test_deploy_monitoring import promtool

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "referral-broker@.service"
NGINX = ROOT / "deploy" / "nginx.conf"
PROMETHEUS = ROOT / "deploy" / "monitoring" / "prometheus-vm.yaml"


def unit() -> dict[str, list[str]]:
    """``Section.Key`` -> every value given to it, in order."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


def environment() -> dict[str, str]:
    return dict(item.split("=", 1) for item in unit()["Service.Environment"])


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


def test_unit_gives_the_drain_its_time() -> None:
    """SIGTERM to the main process alone, and TimeoutStopSec beyond the broker's graceful
    drain, so in-flight requests finish before systemd's SIGKILL."""
    service = unit()
    assert service["Service.KillSignal"] == ["SIGTERM"]
    assert service["Service.KillMode"] == ["mixed"]
    [timeout] = service["Service.TimeoutStopSec"]
    assert seconds(timeout) >= GRACEFUL_SECONDS + 5


def test_unit_reloads_with_sighup_and_reads_env_from_its_directory() -> None:
    """ExecReload sends SIGHUP to the main process; configuration comes from .env in the
    working directory (re-read on SIGHUP), not from EnvironmentFile (read by systemd at start
    only, and winning over .env)."""
    service = unit()
    assert service["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "Service.EnvironmentFile" not in service
    assert service["Service.WorkingDirectory"] == ["/etc/referral-broker"]
    assert service["Service.ExecStart"][0].endswith("/broker serve")


def test_unit_binds_loopback_with_a_metrics_directory_per_instance() -> None:
    """Each instance listens on 127.0.0.1 at its instance name's port, with its own metrics
    directory in its own runtime directory (broker serve empties the directory at start)."""
    env = environment()
    assert env["HOST"] == "127.0.0.1"
    assert env["PORT"] == "%i"
    [runtime] = unit()["Service.RuntimeDirectory"]
    assert "%i" in runtime
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith(f"/run/{runtime}/")
    assert unit()["Service.RestartPreventExitStatus"] == ["2"]  # a refused configuration


def test_unit_instances_are_the_nginx_pool() -> None:
    """The instances the runbook enables (8000, 8001) are the servers of nginx's pool, and the
    private server's per-instance paths point at the same ports."""
    text = NGINX.read_text()
    pool = re.findall(r"^\s*server\s+127\.0\.0\.1:(\d+)\s", text, re.MULTILINE)
    assert pool == ["8000", "8001"]
    for port in pool:
        assert f"location = /instances/{port}/metrics {{ proxy_pass http://127.0.0.1:{port}/" in (
            text
        )
    assert "referral-broker@8000 referral-broker@8001" in UNIT.read_text()


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say about the unit (with the paths of this
    machine's broker and user, which the real ones replace)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    broker = shutil.which("broker") or str(Path(__file__).parents[2] / ".venv" / "bin" / "broker")
    text = UNIT.read_text().replace("/opt/referral-broker/venv/bin/broker", broker)
    text = text.replace("=referral-broker\n", "=root\n")
    (tmp_path / "referral-broker@8000.service").write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "referral-broker@8000.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_prometheus_vm_config_passes_promtool(tmp_path: Path) -> None:
    """`promtool check config` accepts prometheus-vm.yaml with the alert rules beside it, and
    it scrapes each instance through the private server's per-instance path."""
    token = tmp_path / "token"
    token.write_text("a-real-metrics-token-0123456789\n")
    text = PROMETHEUS.read_text().replace(
        "/etc/prometheus/referral-broker-metrics-token", str(token)
    )
    (tmp_path / "prometheus.yml").write_text(text)
    shutil.copy(ROOT / "deploy" / "monitoring" / "alerts.yaml", tmp_path / "alerts.yaml")
    result = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [job] = yaml.safe_load(text)["scrape_configs"]
    paths = [group["labels"]["__metrics_path__"] for group in job["static_configs"]]
    assert paths == ["/instances/8000/metrics", "/instances/8001/metrics"]
    private = NGINX.read_text().split("\nserver {")[2]
    assert "listen 127.0.0.1:8080;" in private
    assert {group["targets"][0].rsplit(":", 1)[1] for group in job["static_configs"]} == {"8080"}
