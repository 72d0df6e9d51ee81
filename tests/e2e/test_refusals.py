"""Configuration that must never run: ``broker serve`` refuses it, ``broker check`` reports it.

Each refusal names the variable (or the one to set) and never the value. Every bad setting is
tried through the command's own entry point (``broker.cli.main``) in this process, in an empty
directory (no .env) with exactly the broker environment given; one bad setting per command is
also run as a real process, for its exit status and its output streams.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from broker.cli import main
from broker.config.refusals import DEV_ISSUER_KEY
from broker.config.settings import Settings
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


# -- the example files' placeholders -----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
K8S = ROOT / "deploy" / "kubernetes"
# Each placeholder of the example files, by file and variable: the value is read from the file,
# so a placeholder reworded there is tried as it now reads.
PLACEHOLDERS = [
    (".env.example", "BROKER_SHOP"),
    (".env.example", "BROKER_SIGNING_KEYS"),
    (".env.example", "BROKER_ISSUER_KEYS"),
    (".env.example", "BROKER_METRICS_TOKEN"),
    (".env.example", "BROKER_SHOPIFY_SECRET"),
    (".env.example", "BROKER_SHOPIFY_SHOP"),
    ("secret.example.yaml", "BROKER_SIGNING_KEYS"),
    ("secret.example.yaml", "BROKER_ISSUER_KEYS"),
    ("secret.example.yaml", "BROKER_METRICS_TOKEN"),
    ("secret.example.yaml", "REDIS_URL"),
    ("configmap.yaml", "BROKER_SHOP"),
]
# What a placeholder of one Shopify variable is paired with: the other one, filled in.
SHOPIFY_PAIR = {
    "BROKER_SHOPIFY_SECRET": ("BROKER_SHOPIFY_SHOP", "real-store.myshopify.com"),
    "BROKER_SHOPIFY_SHOP": ("BROKER_SHOPIFY_SECRET", "shpss_0123456789abcdef0123456789ab"),
}


def env_example_values() -> dict[str, str]:
    """Every ``NAME=value`` of .env.example, set (``NAME=``) or shown (``# NAME=``)."""
    found = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if match := re.fullmatch(r"(?:# )?([A-Z][A-Z0-9_]*)=(.*)", line):
            found[match[1]] = match[2]
    return found


def placeholder(file: str, name: str) -> str:
    if file == ".env.example":
        return env_example_values()[name]
    [document] = [d for d in yaml.safe_load_all((K8S / file).read_text()) if d]
    return str(document.get("stringData", document.get("data"))[name])


def test_every_set_line_of_env_example_is_a_tried_placeholder() -> None:
    """Each variable .env.example sets (not only shows) is in PLACEHOLDERS, so none is
    accepted by serve as it stands."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    set_here = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))
    assert set_here and set_here <= {name for file, name in PLACEHOLDERS if file == ".env.example"}


@pytest.mark.parametrize(("file", "name"), PLACEHOLDERS)
def test_serve_refuses_the_placeholders_of_the_example_files(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    taken_port: int,
    file: str,
    name: str,
) -> None:
    """broker serve exits 2 on a value left as the example file's placeholder, naming the
    variable (the metrics token's placeholder passes the length rule, so this is its own
    refusal)."""
    value = placeholder(file, name)
    env = broker_env(PORT=str(taken_port), **{name: value})
    if name in SHOPIFY_PAIR:
        other, filled = SHOPIFY_PAIR[name]
        env[other] = filled
    if name == "REDIS_URL":
        env["WEB_CONCURRENCY"] = "1"
    in_process_env(monkeypatch, tmp_path, **env)
    with pytest.raises(SystemExit) as stopped:
        main(["serve"])
    out, err = capfd.readouterr()
    assert stopped.value.code == 2, out + err
    assert f"  {name}:" in err


def test_real_values_beside_the_placeholders_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal is of the placeholders only: real values of the same variables pass."""
    in_process_env(monkeypatch, tmp_path)
    env = broker_env(
        BROKER_METRICS_TOKEN="a-real-metrics-token-0123456789",
        BROKER_SHOPIFY_SECRET="shpss_0123456789abcdef0123456789ab",
        BROKER_SHOPIFY_SHOP="real-store.myshopify.com",
        REDIS_URL="redis://:a-real-password@127.0.0.1:6379/0",
    )
    assert Settings.from_env(env, env_file=None).first_shop.slug == env["BROKER_SHOP"]


# What the kubelet writes into a pod for the demo Redis Service `broker-redis` (service links).
KUBELET_LINKS = {
    "BROKER_REDIS_SERVICE_HOST": "10.96.12.7",
    "BROKER_REDIS_SERVICE_PORT": "6379",
    "BROKER_REDIS_SERVICE_PORT_REDIS": "6379",
    "BROKER_REDIS_PORT": "tcp://10.96.12.7:6379",
    "BROKER_REDIS_PORT_6379_TCP": "tcp://10.96.12.7:6379",
    "BROKER_REDIS_PORT_6379_TCP_ADDR": "10.96.12.7",
    "BROKER_REDIS_PORT_6379_TCP_PORT": "6379",
    "BROKER_REDIS_PORT_6379_TCP_PROTO": "tcp",
}


def test_check_ignores_the_kubelet_service_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The variables the kubelet injects for a `broker-redis` Service are not reported as
    unknown by broker check."""
    in_process_env(monkeypatch, tmp_path, **broker_env(**KUBELET_LINKS))
    main(["check"])
    out = capfd.readouterr().out
    assert out.startswith("ok   configuration:"), out
    assert "not a variable the broker knows" not in out


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BROKER_PORT", "8000"),  # a port, but not in the kubelet's tcp:// form
        ("BROKER_REDIS_SERVICE_HOST", "redis.internal"),  # the kubelet writes an address
        ("BROKER_CACHE_TTL_SERVICE_PORT", "sixty"),
    ],
)
def test_look_alikes_of_service_links_are_still_unknown(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    name: str,
    value: str,
) -> None:
    """A name shaped like a service link whose value the kubelet would not write is still
    reported as unknown."""
    in_process_env(monkeypatch, tmp_path, **broker_env(**{name: value}))
    assert main(["check"]) == 1
    assert f"FAIL configuration: {name}: not a variable the broker knows" in (
        capfd.readouterr().out
    )
