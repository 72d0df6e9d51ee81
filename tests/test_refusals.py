"""Configuration that must never run: ``broker serve`` refuses it, ``broker check`` reports it.

Both are run as real processes with the bad setting; each refusal names the variable (or the one
to set) and never the value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker.refusals import DEV_ISSUER_KEY
from tests.servers import free_port
from tests.support import ISSUER_KEY, broker_env

BROKER = str(Path(sys.executable).parent / "broker")

REFUSED = [
    ("BROKER_ISSUER_KEYS", DEV_ISSUER_KEY, "BROKER_ISSUER_KEYS"),
    ("BROKER_ISSUER_KEYS", f"{ISSUER_KEY},{DEV_ISSUER_KEY}", "BROKER_ISSUER_KEYS"),
    ("BROKER_CORS_ORIGINS", "https://*.com", "BROKER_CORS_ORIGINS"),
    ("BROKER_CORS_ORIGINS", "https://shop.example,https://*.co.uk", "BROKER_CORS_ORIGINS"),
    ("BROKER_UPSTREAM_URL", "http://bubblehouse.example", "BROKER_UPSTREAM_URL"),
    ("BROKER_METRICS_TOKEN", "short-metrics", "BROKER_METRICS_TOKEN"),
    ("WEB_CONCURRENCY", "2", "REDIS_URL"),
]


def run(command: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``broker <command>`` in an empty directory (no .env) with exactly the broker env given."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BROKER_", "REDIS_URL", "WEB_CONCURRENCY", "PORT"))
    }
    return subprocess.run(
        [BROKER, command],
        env={**base, **broker_env(PORT=str(free_port()), **env)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(("name", "value", "named"), REFUSED)
def test_serve_refuses_naming_the_variable(
    tmp_path: Path, name: str, value: str, named: str
) -> None:
    """broker serve exits 2 before listening, naming the variable and never its value."""
    result = run("serve", tmp_path, **{name: value})
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"  {name}:" in result.stderr and named in result.stderr
    assert value not in output


@pytest.mark.parametrize(("name", "value", "named"), REFUSED)
def test_check_reports_naming_the_variable(
    tmp_path: Path, name: str, value: str, named: str
) -> None:
    """broker check fails with a FAIL line naming the variable and never its value."""
    result = run("check", tmp_path, **{name: value})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert any(f"configuration: {name}:" in line and named in line for line in failed), output
    assert value not in output


def test_check_fails_on_an_unknown_broker_variable(tmp_path: Path) -> None:
    """broker check fails naming a misspelt BROKER_ variable (serve only warns about it)."""
    result = run("check", tmp_path, BROKER_CACHE_TTTL="5")
    assert result.returncode == 1
    assert "FAIL configuration: BROKER_CACHE_TTTL: not a variable the broker knows" in (
        result.stdout
    )
