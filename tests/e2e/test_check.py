"""``broker check`` against the sandbox and a real Redis, both as real servers.

The checks run in process (``run_check``, ``main_check``); the command itself runs as a real
process where what matters is how its output reaches a pipe.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from broker.check.checks import CheckResult, main_check, run_check
from broker_dev.sandbox import SandboxConfig, create_sandbox_app
from broker_dev.sandbox.config import Rules
from tests import rawhttp
from tests.servers import RedisProcess, free_port, serve_app
from tests.support import SECRET_A, SECRET_B, SHOP, broker_env

UNKNOWN_SECRET = base64.b64encode(b"C" * 16 + b"secret-key-c-0123456789").decode()
SHORT_SECRET = base64.b64encode(b"too-short-secret").decode()
BROKER = str(Path(sys.executable).parent / "broker")


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    """A sandbox that knows key-a and key-b and serves only v2023061."""
    config = SandboxConfig(
        SHOP, {"key-a": base64.b64decode(SECRET_A), "key-b": base64.b64decode(SECRET_B)}
    )
    with serve_app(create_sandbox_app(config)) as server:
        yield server.url


def env(sandbox_url: str, **overrides: str) -> dict[str, str]:
    return broker_env(BROKER_UPSTREAM_URL=sandbox_url, **overrides)


def failures(results: list[CheckResult]) -> list[CheckResult]:
    return [result for result in results if not result.ok]


async def test_all_well(sandbox_url: str) -> None:
    """Good keys and versions, no Redis: every finding is ok, one per version and key."""
    results = await run_check(env(sandbox_url))
    assert failures(results) == []
    names = [result.name for result in results]
    assert names == [
        "configuration",
        "redis",
        "bubblehouse shop test-shop v2023061 key key-a",
        "bubblehouse shop test-shop v2023061 key key-b",
    ]
    assert "in-process store" in results[1].detail


def test_main_prints_one_line_per_finding(
    sandbox_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """main_check prints 'ok   name: detail' lines and exits 0 when all is well."""
    assert main_check(env(sandbox_url)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert all(line.startswith("ok   ") for line in lines)
    assert lines[0].startswith("ok   configuration: shop test-shop")


def test_check_runs_where_only_the_product_is_installed(sandbox_url: str, tmp_path: Path) -> None:
    """`broker check` is the product's (the image's) command: with neither the development
    tools nor httpx2 importable, as in the production image, it checks and exits 0."""
    hide = "import sys; sys.modules['broker_dev'] = sys.modules['httpx2'] = None; "
    done = subprocess.run(
        [sys.executable, "-c", f"{hide}from broker.cli import main; sys.exit(main(['check']))"],
        env={**env(sandbox_url), "PATH": os.environ.get("PATH", "")},
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("ok   ") for line in lines), lines


def test_unknown_signing_key_names_the_kid_not_the_secret(
    sandbox_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key the sandbox does not know fails by kid, exit non-zero, and the secret is not shown."""
    keys = f"key-a:{SECRET_A},key-next:{UNKNOWN_SECRET}"
    assert main_check(env(sandbox_url, BROKER_SIGNING_KEYS=keys)) != 0
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1
    assert "key-next" in failed[0]
    assert "BROKER_SIGNING_KEYS" in failed[0]
    assert "rejected the broker's signing key key-next" in failed[0]
    for secret in (UNKNOWN_SECRET, SECRET_A):
        assert secret not in out
        assert base64.b64decode(secret).decode() not in out


async def test_wrong_secret_for_a_known_kid_fails(sandbox_url: str) -> None:
    """The right kid with the wrong shared secret is refused like an unknown key."""
    results = await run_check(env(sandbox_url, BROKER_SIGNING_KEYS=f"key-a:{UNKNOWN_SECRET}"))
    [failed] = failures(results)
    assert failed.name == "bubblehouse shop test-shop v2023061 key key-a"
    assert "signing key key-a" in failed.detail


async def test_unknown_version_names_the_variable(sandbox_url: str) -> None:
    """A version Bubblehouse does not serve fails naming BROKER_API_VERSIONS; the others pass."""
    results = await run_check(env(sandbox_url, BROKER_API_VERSIONS="v2023061,v2099011"))
    [failed] = failures(results)
    assert failed.name == "bubblehouse shop test-shop v2099011 key key-a"
    assert "BROKER_API_VERSIONS" in failed.detail
    assert "invalid_global_api_version" in failed.detail


async def test_obsolete_version_names_the_variable(sandbox_url: str) -> None:
    """An obsolete first version fails for that version, naming BROKER_API_VERSIONS."""
    results = await run_check(env(sandbox_url, BROKER_API_VERSIONS="v2022011"))
    failed = failures(results)
    assert failed
    assert all("BROKER_API_VERSIONS" in result.detail for result in failed)
    assert "obsolete_global_api_version" in failed[0].detail


def test_nothing_listening_fails_once(capsys: pytest.CaptureFixture[str]) -> None:
    """No server at BROKER_UPSTREAM_URL: one FAIL naming the variable, exit non-zero."""
    url = f"http://127.0.0.1:{free_port()}"
    assert main_check(broker_env(BROKER_UPSTREAM_URL=url)) != 0
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1
    assert failed[0].startswith("FAIL bubblehouse: cannot connect")
    assert "BROKER_UPSTREAM_URL" in failed[0]


def test_bad_configuration_one_line_per_problem(capsys: pytest.CaptureFixture[str]) -> None:
    """Missing shop and a short secret: one FAIL per problem naming the variable, not the value."""
    environ = broker_env(BROKER_SIGNING_KEYS=f"key-a:{SHORT_SECRET}")
    del environ["BROKER_SHOP"]
    assert main_check(environ) != 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("FAIL configuration: ") for line in lines)
    assert any("BROKER_SHOP" in line for line in lines)
    assert any("BROKER_SIGNING_KEYS" in line and "key-a" in line for line in lines)
    assert not any(SHORT_SECRET in line or "too-short-secret" in line for line in lines)


async def test_redis_up(sandbox_url: str, redis_session: RedisProcess) -> None:
    """A live Redis answers PING; the detail names the host, not the URL's credentials."""
    results = await run_check(env(sandbox_url, REDIS_URL=redis_session.url))
    redis = next(result for result in results if result.name == "redis")
    assert redis.ok, redis.detail
    assert f"127.0.0.1:{redis_session.port}" in redis.detail
    assert failures(results) == []


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
async def test_redis_dead_port_fails(sandbox_url: str, scheme: str) -> None:
    """Nothing at REDIS_URL (plain or cluster): FAIL naming REDIS_URL, and no password shown."""
    url = f"{scheme}://user:hunter2-password@127.0.0.1:{free_port()}/0"
    results = await run_check(env(sandbox_url, REDIS_URL=url))
    redis = next(result for result in results if result.name == "redis")
    assert not redis.ok
    assert "REDIS_URL" in redis.detail
    assert "hunter2" not in redis.detail


async def test_other_upstream_status_is_reported_by_number() -> None:
    """An unexpected answer (here 503 with raw text) fails with its status, not its text."""
    html = b"<html>secret internals at 10.0.0.7</html>"
    reply = rawhttp.answer(503, html, {"Content-Type": "text/html"})
    with rawhttp.RawUpstream(reply) as upstream:
        results = await run_check(broker_env(BROKER_UPSTREAM_URL=upstream.url))
    failed = failures(results)
    assert [result.name for result in failed] == [
        "bubblehouse shop test-shop v2023061 key key-a",
        "bubblehouse shop test-shop v2023061 key key-b",
    ]
    assert "HTTP 503" in failed[0].detail
    assert "10.0.0.7" not in failed[0].detail


async def test_upstream_timeout_names_the_variables() -> None:
    """A Bubblehouse that takes the request and never answers: one FAIL naming
    BROKER_UPSTREAM_URL and BROKER_UPSTREAM_TIMEOUT."""
    with rawhttp.RawUpstream(rawhttp.stall) as upstream:
        results = await run_check(
            broker_env(BROKER_UPSTREAM_URL=upstream.url, BROKER_UPSTREAM_TIMEOUT="0.3")
        )
    [failed] = failures(results)
    assert failed.name == "bubblehouse"
    assert "BROKER_UPSTREAM_URL" in failed.detail
    assert "BROKER_UPSTREAM_TIMEOUT" in failed.detail


async def test_sent_a_shop_token_to_status2() -> None:
    """Status2 is called with POST {}, JSON, check's own User-Agent and a bearer shop token of
    the configured shop, under the path of BROKER_UPSTREAM_URL."""
    import jwt

    with rawhttp.RawUpstream(rawhttp.answer(200, b'{"ok": true}')) as upstream:
        results = await run_check(broker_env(BROKER_UPSTREAM_URL=upstream.url + "/base"))
    assert failures(results) == []
    kids = set()
    for raw in upstream.requests:
        head, _, body = raw.partition(b"\r\n\r\n")
        first, *lines = head.decode().split("\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        assert first == f"POST /base/api/v2023061/{SHOP}/Status2 HTTP/1.1"
        assert body == b"{}"
        assert fields["content-type"] == "application/json"
        assert fields["user-agent"] == "referral-broker-check/1.0"
        token = fields["authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, options={"verify_signature": False})
        assert (claims["sub"], claims["aud"]) == (SHOP, "BH")
        kids.add(jwt.get_unverified_header(token)["kid"])
    assert kids == {"key-a", "key-b"}


async def test_customer_read_reports_the_history(sandbox_url: str) -> None:
    """--customer alice: Status2 and a CustomerReferrals2 read, both ok, counted in words."""
    results = await run_check(env(sandbox_url), customer="alice")
    assert failures(results) == []
    [read] = [result for result in results if result.name == "customer read"]
    assert "customer alice" in read.detail and "referrals in the history" in read.detail


@pytest.fixture(scope="module")
def synced_sandbox_url() -> Iterator[str]:
    """A sandbox that knows only customers the shop's platform synced (alice and bob)."""
    config = SandboxConfig(
        SHOP,
        {"key-a": base64.b64decode(SECRET_A), "key-b": base64.b64decode(SECRET_B)},
        rules=Rules(customers="synced"),
    )
    with serve_app(create_sandbox_app(config)) as server:
        yield server.url


async def test_unknown_customer_is_explained(synced_sandbox_url: str) -> None:
    """A customer Bubblehouse has not synced: FAIL saying so in plain words, keys still ok."""
    results = await run_check(env(synced_sandbox_url), customer="zoe")
    [failed] = failures(results)
    assert failed.name == "customer read"
    assert failed.detail.startswith("Bubblehouse does not know customer zoe yet")
    assert "synced" in failed.detail


def test_unknown_customer_fails_the_command(
    synced_sandbox_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """main_check exits 1 and prints the customer line when the customer is unknown."""
    assert main_check(env(synced_sandbox_url), customer="zoe") == 1
    assert "FAIL customer read: Bubblehouse does not know" in capsys.readouterr().out


async def test_customer_read_with_a_bad_id_fails_plainly(sandbox_url: str) -> None:
    """A customer id the broker would refuse is reported, and Bubblehouse is not asked."""
    results = await run_check(env(sandbox_url), customer="a/b")
    [failed] = failures(results)
    assert failed.name == "customer read" and "--customer" in failed.detail


# --- as a process: lines arrive as checks finish ---------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP listener that completes handshakes and then never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def check_process(environ: dict[str, str], *args: str) -> subprocess.Popen[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BROKER_", "REDIS_URL", "PORT", "WEB_CONCURRENCY"))
    }
    return subprocess.Popen(
        [BROKER, "check", *args],
        env={**clean, **environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
    )


def test_first_line_arrives_before_silent_redis_and_upstream(silent_port: int) -> None:
    """Silent Redis and silent Bubblehouse: the configuration line is printed while they wait."""
    environ = broker_env(
        REDIS_URL=f"redis://127.0.0.1:{silent_port}/0",
        BROKER_UPSTREAM_URL=f"http://127.0.0.1:{silent_port}",
        BROKER_UPSTREAM_TIMEOUT="1",
    )
    proc = check_process(environ, "--customer", "alice")
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        still_running = proc.poll() is None
        rest, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert first.startswith("ok   configuration:")
    assert still_running  # the slow checks had not finished when the first line was out
    names = [line.split(":", 1)[0] for line in rest.splitlines()]
    assert sorted(names) == ["FAIL bubblehouse", "FAIL customer read", "FAIL redis"]
    assert proc.returncode == 1


def test_independent_checks_run_concurrently(
    silent_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fast failure (nothing listening upstream) is printed before the silent Redis's line."""
    environ = broker_env(
        REDIS_URL=f"redis://127.0.0.1:{silent_port}/0",
        BROKER_UPSTREAM_URL=f"http://127.0.0.1:{free_port()}",
    )
    assert main_check(environ) == 1
    names = [line.split(":", 1)[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["ok   configuration", "FAIL bubblehouse", "FAIL redis"]


def test_proxy_variables_are_ignored_as_serve_ignores_them(
    sandbox_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With HTTP_PROXY and HTTPS_PROXY naming a port where nothing listens, `broker check`
    still reaches Bubblehouse directly, as the broker's own transport does."""
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, dead)
    monkeypatch.setenv("NO_PROXY", "")
    code = main_check(env(sandbox_url))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "bubblehouse shop test-shop v2023061 key key-a" in out


def refused_at(offset: float) -> bytes:
    """Bubblehouse's 401 invalid_token, sent with a Date ``offset`` seconds from now."""
    date = email.utils.formatdate(time.time() + offset, usegmt=True)
    body = b'{"id": "invalid_token", "message": "The token is not valid."}'
    return rawhttp.answer(401, body, {"Date": date})


@pytest.mark.parametrize("offset", [600, -600])
async def test_refused_token_with_a_far_clock_names_the_skew(offset: int) -> None:
    """When Bubblehouse refuses the token and its Date is 10 minutes off, check says "clock
    skew of 600 s" (and which way) instead of blaming the signing key."""
    with rawhttp.RawUpstream(refused_at(offset)) as upstream:
        results = await run_check(broker_env(BROKER_UPSTREAM_URL=upstream.url))
    [first, *_] = [r for r in failures(results) if r.name.startswith("bubblehouse")]
    match = re.search(r"clock skew of (\d+) s", first.detail)
    assert match and abs(int(match[1]) - 600) <= 2, first.detail
    assert ("behind" if offset > 0 else "ahead of") in first.detail
    assert "BROKER_CLOCK_LEEWAY" in first.detail


async def test_refused_token_with_a_true_clock_blames_the_key() -> None:
    """With Bubblehouse's Date within the leeway, a refused token is still the signing key."""
    with rawhttp.RawUpstream(refused_at(5)) as upstream:
        results = await run_check(broker_env(BROKER_UPSTREAM_URL=upstream.url))
    [first, *_] = [r for r in failures(results) if r.name.startswith("bubblehouse")]
    assert "rejected the broker's signing key key-a" in first.detail
    assert "skew" not in first.detail


async def test_accepted_token_ignores_a_far_clock() -> None:
    """A skewed Date on an accepted Status2 is no failure: only a refused token is judged."""
    date = email.utils.formatdate(time.time() + 600, usegmt=True)
    with rawhttp.RawUpstream(rawhttp.answer(200, b"{}", {"Date": date})) as upstream:
        results = await run_check(broker_env(BROKER_UPSTREAM_URL=upstream.url))
    assert failures(results) == []


async def test_the_sandbox_sends_a_date_to_compare_with(sandbox_url: str) -> None:
    """The sandbox answers with a Date header, as Bubblehouse does, so check can compare."""
    async with httpx2.AsyncClient(base_url=sandbox_url) as client:
        response = await client.post(f"/api/v2023061/{SHOP}/Status2", content=b"{}")
    assert email.utils.parsedate_to_datetime(response.headers["Date"]).tzinfo is not None


@pytest.fixture
def two_shops(sandbox_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a shops file with two shops; the sandbox knows only test-shop."""
    shops = tmp_path / "shops.toml"
    shops.write_text(
        f'[shops.{SHOP}]\nsigning_keys = ["key-a:{SECRET_A}"]\n'
        'issuer_keys = ["issuer-key-of-test-shop-0123456789abcdef"]\n\n'
        f'[shops.other-shop]\nsigning_keys = ["key-a:{SECRET_A}"]\n'
        'issuer_keys = ["issuer-key-of-other-shop-0123456789abcdef"]\n'
    )
    return {
        "BROKER_SHOPS_FILE": str(shops),
        "BROKER_UPSTREAM_URL": sandbox_url,
        "LOG_LEVEL": "info",
    }


async def test_each_shop_of_a_shops_file_is_checked_and_named(two_shops: dict[str, str]) -> None:
    """With a shops file, Status2 is called for every shop with that shop's own keys, and each
    line names its shop: the sandbox knows test-shop with key-a, not other-shop."""
    results = await run_check(two_shops)
    by_name = {result.name: result for result in results}
    assert "2 shops from BROKER_SHOPS_FILE" in by_name["configuration"].detail
    assert by_name[f"bubblehouse shop {SHOP} v2023061 key key-a"].ok
    assert not by_name["bubblehouse shop other-shop v2023061 key key-a"].ok
    assert [r.name for r in failures(results)] == ["bubblehouse shop other-shop v2023061 key key-a"]


async def test_the_customer_read_is_made_in_the_shop_named_by_shop(
    two_shops: dict[str, str],
) -> None:
    """Among several shops, --customer reads in the shop --shop names: ok in test-shop (which
    the sandbox knows), refused as an unknown shop in other-shop; with no --shop, or an unknown
    one, it names the configured shops instead of guessing."""

    async def read(shop: str | None) -> CheckResult:
        results = await run_check(two_shops, customer="alice", shop=shop)
        return next(result for result in results if result.name == "customer read")

    assert (await read(SHOP)).ok
    other = await read("other-shop")
    assert not other.ok and "(unknown_shop)" in other.detail  # asked of other-shop
    for shop, said in ((None, "no --shop"), ("nope", "--shop nope is not one of them")):
        unnamed = await read(shop)
        assert not unnamed.ok
        assert unnamed.detail == (
            f"the configured shops are other-shop, {SHOP} ({said}): name one with --shop"
        )
