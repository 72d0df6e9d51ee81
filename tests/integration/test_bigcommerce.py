"""POST /bigcommerce/token over HTTP: the sandbox's /customer/current.jwt, exchanged and used."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2
import jwt
import pytest

from broker_dev.sandbox import SandboxConfig, create_sandbox_app
from broker_dev.sandbox.bigcommerce import BigCommerceStore
from tests.servers import serve_app
from tests.stack import READ_PATH, Broker, Sandbox, bigcommerce_env, running_broker
from tests.support import SHOP

ORIGIN = "https://shop.example"  # a storefront origin the broker allows
STORE = BigCommerceStore()  # the sandbox's look-alike store
ROUTE = "/bigcommerce/token"


@pytest.fixture
def bigcommerce(sandbox: Sandbox) -> Iterator[Broker]:
    """A broker configured for the sandbox's look-alike BigCommerce store."""
    with running_broker(sandbox.url, **bigcommerce_env(), BROKER_RATE_LIMIT_ISSUER="3/60s") as b:
        yield b


def current_jwt(sandbox: Sandbox, client_id: str = STORE.client_id) -> httpx2.Response:
    """What the storefront script's fetch of /customer/current.jwt gets from its store."""
    return httpx2.get(f"{sandbox.url}/customer/current.jwt", params={"app_client_id": client_id})


def exchange(broker: Broker, token: object, origin: str = ORIGIN) -> httpx2.Response:
    return broker.client.post(ROUTE, json={"token": token}, headers={"Origin": origin})


def test_the_stores_jwt_becomes_a_token_that_reads_the_history(
    bigcommerce: Broker, sandbox: Sandbox
) -> None:
    """The look-alike's JWT is exchanged (no-store, CORS for the shop) for a token of that
    customer, with the customer's email as ce, that reads CustomerReferrals2 through the broker."""
    fetched = current_jwt(sandbox)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"].startswith("text/plain")
    answer = exchange(bigcommerce, fetched.text)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"token", "token_type", "expires_in", "expires_at"}
    assert body["token_type"] == "Bearer"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == f"{SHOP}/{STORE.customer_id}"
    assert claims["ce"] == STORE.email
    read = bigcommerce.client.post(
        READ_PATH, headers={"Authorization": f"Bearer {body['token']}", "Origin": ORIGIN}
    )
    assert read.status_code == 200, read.text
    assert "referrals" in read.json()
    [upstream] = [r for r in sandbox.requests() if r["function"] == "CustomerReferrals2"]
    assert upstream["jwt"]["claims"]["sub"] == f"{SHOP}/{STORE.customer_id}"
    assert upstream["jwt"]["claims"]["ce"] == STORE.email


def test_a_preflight_from_the_shop_is_answered(bigcommerce: Broker) -> None:
    """The browser's preflight of the POST from an allowed origin gets CORS headers."""
    answer = bigcommerce.client.options(
        ROUTE,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "Content-Type" in answer.headers["access-control-allow-headers"]


def test_other_origins_get_no_cors_headers(bigcommerce: Broker, sandbox: Sandbox) -> None:
    """Another site's page can neither preflight nor read the answer."""
    other = "https://evil.example"
    preflight = bigcommerce.client.options(
        ROUTE, headers={"Origin": other, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    answer = exchange(bigcommerce, current_jwt(sandbox).text, origin=other)
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_unconfigured_the_route_is_not_found(broker: Broker, sandbox: Sandbox) -> None:
    """Without the three variables the route answers 404 not_found, whatever it is sent."""
    answer = exchange(broker, current_jwt(sandbox).text)
    assert answer.status_code == 404
    assert answer.json()["id"] == "not_found"
    assert answer.headers["access-control-allow-origin"] == ORIGIN


def test_a_refused_token_is_401_with_its_reason_and_cors(bigcommerce: Broker) -> None:
    """Another secret's JWT: 401 invalid_platform_token with its reason, readable by the shop."""
    forged = jwt.encode(
        STORE.claims(0) | {"exp": 2**31}, "someone-elses-secret-0123456789abcdef", "HS256"
    )
    answer = exchange(bigcommerce, forged)
    assert answer.status_code == 401
    body = answer.json()
    assert (body["id"], body["reason"]) == ("invalid_platform_token", "signature")
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert forged not in answer.text


def test_a_store_jwt_for_another_app_is_refused(bigcommerce: Broker, sandbox: Sandbox) -> None:
    """A JWT another app of the same store fetched (its own client id and secret): refused."""
    other = BigCommerceStore(client_id="other-app", client_secret="other-secret-" + "x" * 30)
    answer = exchange(bigcommerce, other.current_jwt(time.time()))
    assert answer.json()["reason"] == "signature"


@pytest.mark.parametrize(
    ("body", "headers", "status", "error_id"),
    [
        (b'{"tok": "x"}', {"Content-Type": "application/json"}, 400, "invalid_input"),
        (b'{"token": 5}', {"Content-Type": "application/json"}, 400, "invalid_input"),
        (b"{not json", {"Content-Type": "application/json"}, 400, "invalid_json"),
        (b'{"token": "a"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"token": "' + b"a" * 17000 + b'"}', {"Content-Type": "application/json"}, 413,
         "payload_too_large"),
    ],
    ids=["unknown-member", "not-text", "not-json", "not-json-type", "too-large"],
)  # fmt: skip
def test_the_body_follows_the_json_rules(
    bigcommerce: Broker, body: bytes, headers: dict[str, str], status: int, error_id: str
) -> None:
    """The body is a JSON object with one string token: the other JSON routes' rules apply."""
    answer = bigcommerce.client.post(ROUTE, content=body, headers={**headers, "Origin": ORIGIN})
    assert (answer.status_code, answer.json()["id"]) == (status, error_id)
    if error_id == "invalid_input":  # the unknown member, or the token
        assert answer.json()["field"] == ("tok" if b'tok"' in body else "token")


def test_failures_are_throttled_per_address_but_a_genuine_token_passes(
    bigcommerce: Broker, sandbox: Sandbox
) -> None:
    """Past the failed-credential limit an address gets 429 for bad tokens, never for a good one."""
    statuses = [exchange(bigcommerce, "not.a.jwt").status_code for _ in range(5)]
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3:] == [429, 429]
    limited = exchange(bigcommerce, "not.a.jwt")
    assert limited.headers["retry-after"].isdigit()
    assert limited.headers["access-control-allow-origin"] == ORIGIN
    assert exchange(bigcommerce, current_jwt(sandbox).text).status_code == 200


def test_the_look_alike_answers_as_bigcommerce_documents() -> None:
    """/customer/current.jwt: 404 when nobody is signed in, refusals without or with another
    app_client_id, never cached."""
    nobody = SandboxConfig(shop=SHOP, keys={"k": b"k" * 32}, bigcommerce=BigCommerceStore(
        customer_id=None))  # fmt: skip
    with serve_app(create_sandbox_app(nobody)) as server:
        url = f"{server.url}/customer/current.jwt"
        signed_out = httpx2.get(url, params={"app_client_id": STORE.client_id})
        assert signed_out.status_code == 404
        assert signed_out.headers["cache-control"] == "no-store"
        assert httpx2.get(url).status_code == 400
        assert httpx2.get(url, params={"app_client_id": "another"}).status_code == 403
