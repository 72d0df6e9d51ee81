"""The broker command: sandbox, dev and serve's graceful stop as real processes; token, which
only prints, through the same entry point (``broker.cli.main``) in process.

The real command's exit statuses are pinned here (0 after a stop) and by test_refusals (2 on a
refused configuration, 1 from a failing check).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest

from broker.cli import DEV_ISSUER_KEY, dev_environment, main
from broker.rules.tokens import TokenVerifier
from tests.servers import free_port, wait_for_port
from tests.stack import Sandbox
from tests.support import KEEPALIVE, SECRET_A, SECRET_B, broker_env, make_settings

BROKER = str(Path(sys.executable).parent / "broker")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BROKER_* variable of the outer environment leaks into a child process."""
    for name in list(os.environ):
        if name.startswith(("BROKER_", "REDIS_URL", "PORT", "WEB_CONCURRENCY")):
            monkeypatch.delenv(name)


@pytest.fixture
def test_env(clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test deployment's variables, in a folder without a .env file, for in-process runs."""
    monkeypatch.chdir(tmp_path)
    for name, value in broker_env().items():
        monkeypatch.setenv(name, value)


def test_token_command_prints_a_verifiable_token(
    test_env: None, capfd: pytest.CaptureFixture[str]
) -> None:
    """broker token prints a customer token for the configured shop and keys."""
    code = main(["token", "--customer", "alice", "--email", "a@example.com", "--ttl", "60"])
    out, err = capfd.readouterr()
    assert code == 0, err
    customer = TokenVerifier(make_settings()).verify(out.strip())
    assert (customer.id, customer.email) == ("alice", "a@example.com")


def test_token_command_takes_the_shop_named_by_shop(
    clean_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """With a shops file of two shops, broker token signs for the shop --shop names, and
    without --shop, or with one not in the file, exits 2 asking for a configured shop."""
    monkeypatch.chdir(tmp_path)
    shops = tmp_path / "shops.toml"
    shops.write_text(
        f'[shops.one-shop]\nsigning_keys = ["key-a:{SECRET_A}"]\n'
        'issuer_keys = ["issuer-key-of-one-shop-0123456789abcdef"]\n\n'
        f'[shops.two-shop]\nsigning_keys = ["key-b:{SECRET_B}"]\n'
        'issuer_keys = ["issuer-key-of-two-shop-0123456789abcdef"]\n'
    )
    monkeypatch.setenv("BROKER_SHOPS_FILE", str(shops))
    monkeypatch.setenv("BROKER_UPSTREAM_URL", "http://127.0.0.1:9")
    assert main(["token", "--customer", "alice", "--shop", "two-shop"]) == 0
    out, _ = capfd.readouterr()
    token = out.strip()
    assert jwt.get_unverified_header(token)["kid"] == "key-b"
    assert jwt.decode(token, options={"verify_signature": False})["sub"].startswith("two-shop")
    for shop in ([], ["--shop", "nope"]):
        with pytest.raises(SystemExit) as refused:
            main(["token", "--customer", "alice", *shop])
        assert refused.value.code == 2
        assert "name a configured shop with --shop" in capfd.readouterr().err


def test_token_command_refuses_bad_input_and_bad_config(
    test_env: None, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A bad customer id and a bad configuration both exit 2 with a plain message."""
    assert main(["token", "--customer", "a/b"]) == 2
    out, err = capfd.readouterr()
    assert "customer_id" in err and out == ""
    monkeypatch.setenv("BROKER_SIGNING_KEYS", "k:c2hvcnQ=")
    with pytest.raises(SystemExit) as refused:
        main(["token", "--customer", "alice"])
    out, err = capfd.readouterr()
    assert refused.value.code == 2
    assert "BROKER_SIGNING_KEYS" in err and "c2hvcnQ=" not in out + err


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [BROKER, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parent,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
    return proc.returncode, out


@contextlib.contextmanager
def dev_process(args: list[str], env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """broker dev on free ports, as a user starts it, with ``args`` and ``env`` added: its URLs
    and the lines it printed before serving."""
    ports = [free_port() for _ in range(3)]
    flags = ["--port", str(ports[0]), "--sandbox-port", str(ports[1]), "--demo-port", str(ports[2])]
    proc = start(["dev", *flags, *args], env)
    try:
        for port in ports:
            wait_for_port(port, timeout=30)
        assert proc.stdout is not None
        banner: list[str] = []  # printed before the servers start, so already in the pipe
        while not banner or not banner[-1].startswith("Press Ctrl+C"):
            banner.append(proc.stdout.readline().strip())
        yield {
            "proc": proc,
            "broker": f"http://127.0.0.1:{ports[0]}",
            "demo": f"http://127.0.0.1:{ports[2]}",
            "banner": banner,
        }
    finally:
        code, out = stop(proc)
        assert code == 0, out


@pytest.fixture
def dev_stack(clean_env: None) -> Iterator[dict[str, Any]]:
    """broker dev on free ports, as a user starts it."""
    with dev_process([], {}) as running:
        yield running


@pytest.mark.slow
def test_dev_runs_the_readme_flow(dev_stack: dict[str, Any]) -> None:
    """The README's curl sequence works against broker dev: mint, read, send, read, mismatch."""
    with httpx2.Client(base_url=dev_stack["broker"], timeout=10, limits=KEEPALIVE) as client:
        minted = client.post(
            "/tokens",
            headers={"Authorization": f"Bearer {DEV_ISSUER_KEY}"},
            json={"customer_id": "alice", "email": "alice@example.com"},
        )
        assert minted.status_code == 200, minted.text
        auth = {"Authorization": f"Bearer {minted.json()['token']}"}
        path = "/api/v2023061/demo-shop/"
        before = client.post(path + "CustomerReferrals2", headers=auth, json={})
        assert before.status_code == 200
        sent = client.post(
            path + "Refer2",
            headers=auth,
            json={"channel": "email", "destination": "friend@example.com"},
        )
        assert sent.status_code == 200
        after = client.post(path + "CustomerReferrals2", headers=auth, json={})
        assert len(after.json()["referrals"]) == len(before.json()["referrals"]) + 1
        mismatch = client.post(
            path + "CustomerReferrals2", headers=auth, json={"customer": {"shopid": "bob"}}
        )
        assert mismatch.status_code == 403
        assert mismatch.json()["id"] == "customer_identity_does_not_match_token"
    assert httpx2.get(dev_stack["demo"] + "/").status_code == 200


@pytest.mark.slow
def test_dev_serves_a_developers_own_page_and_their_own_tokens(clean_env: None) -> None:
    """broker dev allows the origins of --cors-origin and BROKER_CORS_ORIGINS besides the
    demo's, and prints its throwaway signing key, with which a token minted on a merchant's
    server (as docs/recipes.md does) is accepted."""
    own = ["https://one.shop.example", "http://localhost:5173"]
    env = {"BROKER_CORS_ORIGINS": "https://env.shop.example"}
    with dev_process([arg for o in own for arg in ("--cors-origin", o)], env) as dev:
        printed = "\n".join(dev["banner"])
        key = re.search(r"signing key .*: kid (\S+), base64 secret (\S+)", printed)
        assert key, printed
        now = int(time.time())
        claims = {"aud": "BH", "sub": "demo-shop/own-page", "iat": now, "exp": now + 300}
        token = jwt.encode(
            claims, base64.b64decode(key[2]), algorithm="HS256", headers={"kid": key[1]}
        )
        path = dev["broker"] + "/api/v2023061/demo-shop/CustomerReferrals2"
        for origin in [*own, "https://env.shop.example", dev["demo"]]:
            answer = httpx2.post(
                path,
                json={},
                headers={"Authorization": f"Bearer {token}", "Origin": origin},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["access-control-allow-origin"] == origin
            assert origin in printed
        other = httpx2.options(
            path,
            headers={"Origin": "https://other.example", "Access-Control-Request-Method": "POST"},
            timeout=10,
        )
        assert "access-control-allow-origin" not in other.headers


def test_dev_key_is_new_each_run_and_bad_origins_are_refused(
    clean_env: None, capfd: pytest.CaptureFixture[str]
) -> None:
    """Each broker dev run makes its own signing key; a bad --cors-origin stops it with exit 2
    naming BROKER_CORS_ORIGINS, before anything listens."""
    first, second = (dev_environment({}, 1, 2, 3, "127.0.0.1") for _ in range(2))
    assert first["BROKER_SIGNING_KEYS"] != second["BROKER_SIGNING_KEYS"]
    assert main(["dev", "--port", "1", "--cors-origin", "not an origin"]) == 2
    assert "BROKER_CORS_ORIGINS" in capfd.readouterr().err


@pytest.mark.slow
def test_sandbox_command_serves_status2(clean_env: None) -> None:
    """broker sandbox alone answers Bubblehouse's Status2 for a shop token."""
    from broker.rules.tokens import TokenMinter

    port = free_port()
    proc = start(["sandbox", "--port", str(port)], broker_env())
    try:
        wait_for_port(port, timeout=30)
        token = TokenMinter(make_settings()).shop_token()
        response = httpx2.post(
            f"http://127.0.0.1:{port}/api/v2023061/test-shop/Status2",
            headers={"Authorization": f"Bearer {token}"},
            json={},
        )
        assert response.status_code == 200 and response.json()["ok"] is True
    finally:
        code, out = stop(proc)
    assert code == 0, out


@pytest.mark.slow
def test_serve_finishes_in_flight_requests_on_sigterm(clean_env: None, sandbox: Sandbox) -> None:
    """SIGTERM during a slow request: the request completes, then the process exits 0."""
    port = free_port()
    env = broker_env(BROKER_UPSTREAM_URL=sandbox.url, PORT=str(port), LOG_FORMAT="json")
    proc = start(["serve"], env)
    try:
        wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        assert httpx2.get(base + "/readyz").json()["redis"] == "memory"
        sandbox.fault(delay=2, functions=["CustomerReferrals2"])
        token = TokenMinter_token()
        result: dict[str, Any] = {}

        def slow_read() -> None:
            result["response"] = httpx2.post(
                f"{base}/api/v2023061/test-shop/CustomerReferrals2",
                headers={"Authorization": f"Bearer {token}"},
                timeout=20,
            )

        thread = threading.Thread(target=slow_read)
        thread.start()
        # Stop the broker only once the read is in flight: the sandbox has received it (and is
        # holding it back for 2 s).
        deadline = time.monotonic() + 20
        while sandbox.calls().get("CustomerReferrals2", 0) == 0:
            assert time.monotonic() < deadline, "the read never reached the sandbox"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        thread.join(timeout=20)
        assert result["response"].status_code == 200
        code, out = stop(proc)
        assert code == 0, out
        assert '"event":"broker.stopped"' in out
    finally:
        if proc.poll() is None:
            proc.kill()


def TokenMinter_token() -> str:  # noqa: N802 - reads as the thing it returns
    from broker.rules.tokens import TokenMinter

    return TokenMinter(make_settings()).customer_token("alice").token
