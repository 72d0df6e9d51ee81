"""The sandbox app and its control API called in process (ASGI, no socket), and its state."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx2
import jwt
import pytest

from broker_dev.sandbox import SandboxConfig, create_sandbox_app
from broker_dev.sandbox.config import Rules
from broker_dev.sandbox.control import SandboxState
from broker_dev.sandbox.data import SandboxStore
from broker_dev.sandbox.faults import Fault
from tests.support import SECRET_A, SHOP

KEYS = {"key-a": base64.b64decode(SECRET_A)}
SHOP_TOKEN = jwt.encode({"aud": "BH", "sub": SHOP}, KEYS["key-a"], headers={"kid": "key-a"})
AUTH = {"authorization": f"Bearer {SHOP_TOKEN}"}
READ = f"/api/v2023061/{SHOP}/CustomerReferrals2"


async def client_of(config: SandboxConfig) -> httpx2.AsyncClient:
    """A client calling a fresh sandbox app in process."""
    transport = httpx2.ASGITransport(app=create_sandbox_app(config))
    return httpx2.AsyncClient(transport=transport, base_url="http://sandbox")


@pytest.fixture
async def sandbox() -> AsyncIterator[httpx2.AsyncClient]:
    """A seeded sandbox in normal mode."""
    async with await client_of(SandboxConfig(shop=SHOP, keys=KEYS)) as client:
        yield client


@pytest.fixture
async def fast() -> AsyncIterator[httpx2.AsyncClient]:
    """A sandbox in benchmark mode."""
    async with await client_of(SandboxConfig(shop=SHOP, keys=KEYS, fast=True)) as client:
        yield client


# -- input ----------------------------------------------------------------------------------


async def test_an_empty_post_body_is_no_input(sandbox: httpx2.AsyncClient) -> None:
    """A POST without body reads as no input: Status2 answers, a read lacks its customer."""
    status = await sandbox.post(f"/api/v2023061/{SHOP}/Status2", headers=AUTH, content=b"  ")
    assert status.json() == {"ok": True, "shop": SHOP, "token_kind": "shop"}
    read = await sandbox.post(READ, headers=AUTH, content=b"")
    assert (read.status_code, read.json()["id"]) == (400, "missing_customer_identity")


# -- faults in benchmark mode ---------------------------------------------------------------


async def test_fast_mode_serves_its_fixed_body_after_a_delay_fault(
    fast: httpx2.AsyncClient,
) -> None:
    """A delay-only fault is spent on a benchmark read, which then answers its fixed body."""
    await fast.post("/_sandbox/faults", json={"delay": 0.01, "times": 1})
    answer = await fast.get(READ, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["summary"]["sent"] == 6
    assert (await fast.get("/_sandbox/faults")).json() == {"faults": []}


async def test_fast_mode_answers_a_status_fault(fast: httpx2.AsyncClient) -> None:
    """A status fault replaces the benchmark read's answer."""
    await fast.post("/_sandbox/faults", json={"status": 503, "times": 1})
    answer = await fast.get(READ, headers=AUTH)
    assert (answer.status_code, answer.json()["id"]) == (503, "internal_error")
    assert (await fast.get(READ, headers=AUTH)).status_code == 200


async def test_fast_mode_passes_over_faults_for_other_functions(fast: httpx2.AsyncClient) -> None:
    """A fault limited to Refer2 neither hits nor is spent by a benchmark read."""
    await fast.post("/_sandbox/faults", json={"status": 500, "times": 1, "functions": ["Refer2"]})
    assert (await fast.get(READ, headers=AUTH)).status_code == 200
    assert [f["times"] for f in (await fast.get("/_sandbox/faults")).json()["faults"]] == [1]


# -- routing --------------------------------------------------------------------------------


async def test_routing_errors_are_json(sandbox: httpx2.AsyncClient) -> None:
    """An unknown path is 404 not_found, a wrong method on a control path 405, both JSON."""
    missing = await sandbox.get("/nothing/here")
    assert (missing.status_code, missing.json()) == (404, {"id": "not_found"})
    wrong = await sandbox.get("/_sandbox/reset")
    assert (wrong.status_code, wrong.json()) == (405, {"id": "method_not_allowed"})


# -- control API refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "error_id"),
    [
        ("POST", "/_sandbox/faults", "invalid_fault"),
        ("PUT", "/_sandbox/settings", "invalid_settings"),
        ("POST", "/_sandbox/customers", "invalid_customer"),
        ("POST", "/_sandbox/referrals/0000000000000000", "invalid_status"),
    ],
)
async def test_a_control_body_that_is_not_json_is_refused(
    sandbox: httpx2.AsyncClient, method: str, path: str, error_id: str
) -> None:
    """Every control call with a body answers 400 with its own id when the body is not JSON."""
    answer = await sandbox.request(method, path, content=b"{nope")
    assert answer.status_code == 400
    assert answer.json() == {"id": error_id, "message": "the body is not JSON"}


@pytest.mark.parametrize("reward", [True, "500", 1.5])
async def test_a_reward_that_is_no_whole_number_is_refused(
    sandbox: httpx2.AsyncClient, reward: object
) -> None:
    """reward_pts must be an integer; nothing moves otherwise."""
    history = await sandbox.post(READ, headers=AUTH, json={"customer": {"shopid": "bob"}})
    bhid = history.json()["referrals"][0]["referral_bhid"]
    answer = await sandbox.post(
        f"/_sandbox/referrals/{bhid}", json={"status": "approved", "reward_pts": reward}
    )
    assert answer.status_code == 400
    assert answer.json() == {"id": "invalid_status", "message": "reward_pts must be a whole number"}
    after = await sandbox.post(READ, headers=AUTH, json={"customer": {"shopid": "bob"}})
    assert after.json() == history.json()


# -- the state ------------------------------------------------------------------------------


def test_reset_returns_the_state_to_how_it_started() -> None:
    """reset() re-seeds the store and forgets faults, requests, rate counts, rules and calls."""
    config = SandboxConfig(shop=SHOP, keys=KEYS, rules=Rules(rate_limit_read=1))
    state = SandboxState(config, SandboxStore(SHOP, lambda: 1_700_000_000.0))
    assert state.rules == config.rules
    assert state.calls == {"CustomerReferrals2": 0, "Refer2": 0, "Status2": 0}
    state.store.customer_for_token("zoe", None)
    state.faults.add(Fault(status=500))
    state.requests.append({"function": "Status2"})
    state.rates.over("read", "alice", 1, 5.0)
    state.rules = Rules(customers="synced")
    state.calls["Status2"] = 3
    state.calls["Nope"] = 1
    state.reset()
    assert sorted(state.store.customers) == ["alice", "bob"]
    assert (state.faults.faults, list(state.requests)) == ([], [])
    assert state.rates.over("read", "alice", 1, 5.0) is False
    assert state.rules == config.rules
    assert state.calls == {"CustomerReferrals2": 0, "Refer2": 0, "Status2": 0}
