"""POST /invalidations and ``broker invalidate``: a merchant drops one customer's cached history."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import structlog

from broker.cli import main
from broker.rules.tokens import TokenMinter
from tests.servers import RedisProcess, free_port
from tests.stack import VERSION, Broker, Sandbox, running_broker
from tests.support import ISSUER_KEY, ISSUER_KEY_OLD, broker_env, flush

BROKER = str(Path(sys.executable).parent / "broker")
ORIGIN = "https://shop.example"


def send_outside_the_broker(broker: Broker, sandbox: Sandbox, customer: str = "alice") -> str:
    """A referral made straight at Bubblehouse (the referral block on the merchant's page)."""
    token = TokenMinter(broker.settings).customer_token(customer).token
    answer = httpx2.post(
        f"{sandbox.url}/api/{VERSION}/{broker.settings.first_shop.slug}/Refer2",
        json={"channel": "telegram"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    answer.raise_for_status()
    bhid: str = answer.json()["referral"]["referral_bhid"]
    return bhid


def history_ids(broker: Broker, customer: str = "alice") -> tuple[set[str], str]:
    answer = broker.read(customer)
    assert answer.status_code == 200, answer.text
    ids = {row["referral_bhid"] for row in answer.json()["referrals"]}
    return ids, answer.headers["Cache-Status"]


def invalidate(
    broker: Broker, body: object, key: str = ISSUER_KEY, **headers: str
) -> httpx2.Response:
    return broker.client.post(
        "/invalidations", json=body, headers={"Authorization": f"Bearer {key}", **headers}
    )


def test_invalidation_makes_the_next_read_go_to_bubblehouse(
    broker: Broker, sandbox: Sandbox
) -> None:
    """204, and the next read is a miss that shows a referral made outside the broker."""
    history_ids(broker)
    before, status = history_ids(broker)
    assert "hit" in status
    made = send_outside_the_broker(broker, sandbox)
    still, status = history_ids(broker)
    assert "hit" in status and made not in still  # the cache cannot know on its own
    answer = invalidate(broker, {"customer_id": "alice"})
    assert answer.status_code == 204, answer.text
    assert answer.content == b""
    after, status = history_ids(broker)
    assert "fwd=miss" in status
    assert made in after and before < after


def test_invalidation_touches_only_that_customer(broker: Broker, sandbox: Sandbox) -> None:
    """Another customer's cached history stays cached."""
    history_ids(broker, "bob")
    assert invalidate(broker, {"customer_id": "alice"}).status_code == 204
    _, status = history_ids(broker, "bob")
    assert "hit" in status


def test_rotated_issuer_key_is_accepted(broker: Broker) -> None:
    """Every configured issuer key works, as on /tokens."""
    assert invalidate(broker, {"customer_id": "alice"}, ISSUER_KEY_OLD).status_code == 204


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic abc"}],
)
def test_without_a_valid_issuer_key_is_401(broker: Broker, headers: dict[str, str]) -> None:
    """No key, a wrong key or another scheme: 401 invalid_issuer_key in problem+json."""
    answer = broker.client.post("/invalidations", json={"customer_id": "alice"}, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["id"] == "invalid_issuer_key"


def test_failures_are_throttled_but_a_valid_key_is_served(broker: Broker) -> None:
    """After many wrong keys the address gets 429, yet the right key is still 204."""
    statuses = [
        invalidate(broker, {"customer_id": "alice"}, "wrong-key").status_code for _ in range(15)
    ]
    assert statuses[0] == 401 and statuses[-1] == 429
    refused = invalidate(broker, {"customer_id": "alice"}, "wrong-key")
    assert refused.json()["id"] == "rate_limit_exceeded" and "Retry-After" in refused.headers
    assert invalidate(broker, {"customer_id": "alice"}).status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "customer_id"),
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": 42}, "customer_id"),
        ({"customer_id": "a/b"}, "customer_id"),
        ({"customer_id": "alice\n"}, "customer_id"),
        ({"customer_id": "x" * 129}, "customer_id"),
        ({"customer_id": "alice", "colour": "x"}, "colour"),
        ({"customer_id": "alice", "shop": 42}, "shop"),
    ],
)
def test_bad_bodies_are_invalid_input(broker: Broker, body: object, field: str) -> None:
    """customer_id is validated like /tokens' customer_id, shop must be a string; unknown
    fields are named."""
    answer = invalidate(broker, body)
    assert answer.status_code == 400
    assert answer.json()["id"] == "invalid_input" and answer.json()["field"] == field


def test_a_body_naming_another_shop_refuses_the_key(broker: Broker) -> None:
    """A body whose shop is not the issuer key's shop is 401 invalid_issuer_key (spec 2.1); its
    own shop is accepted."""
    other = invalidate(broker, {"customer_id": "alice", "shop": "x"})
    assert other.status_code == 401 and other.json()["id"] == "invalid_issuer_key"
    own = invalidate(broker, {"customer_id": "alice", "shop": broker.settings.first_shop.slug})
    assert own.status_code == 204


def test_not_json_is_refused(broker: Broker) -> None:
    """A body that is not a JSON object, or not JSON at all, is refused in the usual shape."""
    auth = {"Authorization": f"Bearer {ISSUER_KEY}"}
    not_object = broker.client.post("/invalidations", json=["alice"], headers=auth)
    assert not_object.status_code == 400 and not_object.json()["id"] == "invalid_json"
    form = broker.client.post(
        "/invalidations",
        content=b"customer_id=alice",
        headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    get = broker.client.get("/invalidations", headers=auth)
    assert get.status_code == 405 and get.json()["id"] == "method_not_allowed"


def test_no_cors_headers_even_for_a_storefront_origin(broker: Broker) -> None:
    """Server to server: no Access-Control-* header on answers or preflights."""
    answers = [
        invalidate(broker, {"customer_id": "alice"}, Origin=ORIGIN),
        invalidate(broker, {"customer_id": "alice"}, "wrong", Origin=ORIGIN),
        broker.client.options(
            "/invalidations",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        ),
    ]
    for answer in answers:
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]


# --- broker invalidate ----------------------------------------------------------------------


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


Run = Callable[[list[str], dict[str, str]], Ran]


@pytest.fixture
def run_cli(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> Iterator[Run]:
    """`broker ARGS` run in process (the console script's own main) with exactly ``env`` of the
    deployment's variables, in a folder without a .env file."""

    def run(args: list[str], env: dict[str, str]) -> Ran:
        for name in list(os.environ):
            if name.startswith(("BROKER_", "REDIS_URL", "PORT", "WEB_CONCURRENCY")):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        capfd.readouterr()
        code = main(args)
        out, err = capfd.readouterr()
        return Ran(code, out, err)

    yield run
    structlog.reset_defaults()  # the command set up its own logging


@pytest.fixture
def redis_broker(sandbox: Sandbox, redis_session: RedisProcess) -> Iterator[Broker]:
    """A broker whose cache lives in a real redis-server (flushed first)."""
    asyncio.run(flush(redis_session.url))
    with running_broker(sandbox.url, REDIS_URL=redis_session.url) as running:
        yield running


def test_cli_invalidate_drops_the_entry_in_redis(
    redis_broker: Broker, sandbox: Sandbox, redis_session: RedisProcess, run_cli: Run
) -> None:
    """`broker invalidate alice` makes the serving broker, another process, miss."""
    history_ids(redis_broker)
    made = send_outside_the_broker(redis_broker, sandbox)
    assert "hit" in history_ids(redis_broker)[1]
    env = broker_env(REDIS_URL=redis_session.url, BROKER_UPSTREAM_URL=sandbox.url)
    result = run_cli(["invalidate", "alice"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["dropped the cached referral history of customer alice"]
    after, status = history_ids(redis_broker)
    assert "fwd=miss" in status and made in after


def test_cli_invalidate_without_redis_explains_and_fails(run_cli: Run) -> None:
    """With no REDIS_URL the command says it cannot reach a process's memory, exit 2."""
    result = run_cli(["invalidate", "alice"], broker_env())
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr and "POST /invalidations" in result.stderr


def test_cli_invalidate_with_redis_down_fails(run_cli: Run) -> None:
    """A Redis that refuses connections: exit 1, nothing claimed."""
    env = broker_env(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    result = run_cli(["invalidate", "alice"], env)
    assert result.returncode == 1
    assert "did not answer" in result.stderr and "dropped" not in result.stdout


def test_cli_invalidate_refuses_a_bad_customer_id(run_cli: Run) -> None:
    """A customer id with a '/' is refused before anything is touched."""
    result = run_cli(["invalidate", "a/b"], broker_env(REDIS_URL="redis://127.0.0.1:9/0"))
    assert result.returncode == 2 and "CUSTOMER_ID" in result.stderr
