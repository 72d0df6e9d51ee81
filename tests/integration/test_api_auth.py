"""Browser-call authentication over HTTP: every hostile request stops at the broker."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from tests.stack import READ_PATH, WRITE_PATH, Broker, Sandbox
from tests.unit.test_tokens import ATTACKS


def assert_refused(response: httpx2.Response, error_id: str, reason: str | None = None) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["id"] == error_id
    if reason is not None:
        assert body["reason"] == reason
    assert response.headers["www-authenticate"].startswith("Bearer")


# An empty token is "no token" over HTTP (test_missing_bearer_token).
HTTP_ATTACKS = [attack for attack in ATTACKS if attack[0] != "empty"]


@pytest.mark.parametrize(("name", "make", "reason"), HTTP_ATTACKS, ids=[a[0] for a in HTTP_ATTACKS])
def test_hostile_tokens_never_reach_bubblehouse(
    broker: Broker, sandbox: Sandbox, name: str, make: Any, reason: str
) -> None:
    """Each hostile token is 401 invalid_token with its reason on both calls; no upstream call."""
    headers = {"Authorization": f"Bearer {make()}"}
    assert_refused(broker.client.post(READ_PATH, headers=headers), "invalid_token", reason)
    assert_refused(
        broker.client.post(WRITE_PATH, headers=headers, json={"channel": "sms"}),
        "invalid_token",
        reason,
    )
    assert sandbox.total_calls() == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6cHc="},
        {"Authorization": "Token abc"},
    ],
)
def test_missing_bearer_token(broker: Broker, sandbox: Sandbox, headers: dict[str, str]) -> None:
    """No bearer credential is 401 missing_token with WWW-Authenticate: Bearer."""
    assert_refused(broker.client.post(READ_PATH, headers=headers), "missing_token")
    assert sandbox.total_calls() == 0


def test_token_in_query_string_or_cookie_is_ignored(broker: Broker, sandbox: Sandbox) -> None:
    """A valid token in ?auth=, ?token= or a cookie does not authenticate."""
    token = broker.token()
    for query in ("auth", "token", "access_token", "jwt"):
        response = broker.client.get(f"{READ_PATH}?{query}={token}")
        assert_refused(response, "missing_token")
    response = broker.client.post(READ_PATH, headers={"Cookie": f"token={token}; auth={token}"})
    assert_refused(response, "missing_token")
    assert sandbox.total_calls() == 0


def test_duplicated_authorization_headers_are_refused(broker: Broker, sandbox: Sandbox) -> None:
    """Two Authorization headers, even both valid, are refused."""
    token = broker.token()
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    response = broker.client.post(READ_PATH, headers=headers)
    assert_refused(response, "invalid_token", "malformed")
    assert sandbox.total_calls() == 0


def test_scheme_is_case_insensitive(broker: Broker) -> None:
    """'bearer' and 'BEARER' work like 'Bearer'."""
    for scheme in ("bearer", "BEARER"):
        response = broker.client.post(
            READ_PATH, headers={"Authorization": f"{scheme} {broker.token()}"}
        )
        assert response.status_code == 200


def test_token_for_another_broker_shop_is_refused(broker: Broker, sandbox: Sandbox) -> None:
    """A correctly signed token for another shop does not work here."""
    from broker.rules.tokens import TokenMinter
    from tests.support import make_settings

    other = TokenMinter(make_settings(BROKER_SHOP="other-shop")).customer_token("alice").token
    assert_refused(
        broker.client.post(READ_PATH, headers={"Authorization": f"Bearer {other}"}),
        "invalid_token",
        "subject",
    )
    assert sandbox.total_calls() == 0
