"""Configuration that must never run: ``broker serve`` refuses it, ``broker check`` reports it.

Each refusal names the variable (or the one to set) and never the value. Every bad setting is
tried through the command's own entry point (``broker.cli.main``) in this process, in an empty
directory (no .env) with exactly the broker environment given; one bad setting per command is
also run as a real process, for its exit status and its output streams.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.cli import main
from broker.config.refusals import DEV_ISSUER_KEY
from tests.servers import free_port
from tests.support import ISSUER_KEY, broker_env

BROKER = str(Path(sys.executable).parent / "broker")
OUTER = ("BROKER_", "REDIS_URL", "WEB_CONCURRENCY", "PORT")

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
    base = {k: v for k, v in os.environ.items() if not k.startswith(OUTER)}
    return subprocess.run(
        [BROKER, command],
        env={**base, **broker_env(PORT=str(free_port()), **env)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else already listens on: a serve that wrongly started fails to bind
    (and so ends) instead of serving until the test times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))  # where broker serve binds
        sock.listen(1)
        yield int(sock.getsockname()[1])


def in_process_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> None:
    """This process as `run` sets up a child: an empty directory, exactly the broker env given."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(OUTER):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_serve_process_refuses_before_listening(tmp_path: Path) -> None:
    """The real broker serve exits 2 on a refused setting, on stderr, naming the variable
    and never its value."""
    result = run("serve", tmp_path, BROKER_ISSUER_KEYS=DEV_ISSUER_KEY)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "  BROKER_ISSUER_KEYS:" in result.stderr
    assert DEV_ISSUER_KEY not in output


@pytest.mark.parametrize(("name", "value", "named"), REFUSED)
def test_serve_refuses_naming_the_variable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    taken_port: int,
    name: str,
    value: str,
    named: str,
) -> None:
    """broker serve exits 2 before listening, naming the variable and never its value."""
    in_process_env(monkeypatch, tmp_path, **broker_env(PORT=str(taken_port), **{name: value}))
    with pytest.raises(SystemExit) as stopped:
        main(["serve"])
    out, err = capfd.readouterr()
    assert stopped.value.code == 2, out + err
    assert f"  {name}:" in err and named in err
    assert value not in out + err


def test_check_process_reports_and_fails(tmp_path: Path) -> None:
    """The real broker check exits 1 with a FAIL line on stdout naming the variable and never
    its value."""
    result = run("check", tmp_path, BROKER_METRICS_TOKEN="short-metrics")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert any("configuration: BROKER_METRICS_TOKEN:" in line for line in failed), output
    assert "short-metrics" not in output


@pytest.mark.parametrize(("name", "value", "named"), REFUSED)
def test_check_reports_naming_the_variable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    name: str,
    value: str,
    named: str,
) -> None:
    """broker check fails with a FAIL line naming the variable and never its value."""
    in_process_env(monkeypatch, tmp_path, **broker_env(PORT=str(free_port()), **{name: value}))
    code = main(["check"])
    out, err = capfd.readouterr()
    assert code == 1, out + err
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert any(f"configuration: {name}:" in line and named in line for line in failed), out
    assert value not in out + err


def test_check_fails_on_an_unknown_broker_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """broker check fails naming a misspelt BROKER_ variable (serve only warns about it)."""
    in_process_env(monkeypatch, tmp_path, **broker_env(BROKER_CACHE_TTTL="5"))
    assert main(["check"]) == 1
    assert "FAIL configuration: BROKER_CACHE_TTTL: not a variable the broker knows" in (
        capfd.readouterr().out
    )
