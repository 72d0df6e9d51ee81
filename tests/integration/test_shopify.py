"""GET /shopify/token over HTTP, with app proxy signatures computed as Shopify documents."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode

import pytest

from broker.config.settings import ConfigError
from broker.web.shopify import proxy_signature
from tests.stack import READ_PATH, Broker, Sandbox, running_broker
from tests.support import make_settings

SECRET = "shpss_0123456789abcdef0123456789abcdef"
STORE = "test-store.myshopify.com"
ORIGIN = "https://shop.example"  # a storefront origin the broker allows


def shopify_signed(params: list[tuple[str, str]], secret: str = SECRET) -> list[tuple[str, str]]:
    """``params`` plus ``signature``, made the way Shopify's app proxy documentation shows it."""
    values: dict[str, list[str]] = {}
    for name, value in params:
        values.setdefault(name, []).append(value)
    sorted_params = "".join(sorted(f"{k}={','.join(v)}" for k, v in values.items()))
    digest = hmac.new(secret.encode(), sorted_params.encode(), hashlib.sha256).hexdigest()
    return [*params, ("signature", digest)]


def proxy_query(customer: str | None = "7301", **changes: str) -> list[tuple[str, str]]:
    """What the app proxy adds to /apps/referrals/token, for a logged-in customer by default."""
    params = {
        "shop": STORE,
        "logged_in_customer_id": customer or "",
        "path_prefix": "/apps/referrals",
        "timestamp": str(int(time.time())),
        **changes,
    }
    return list(params.items())


@pytest.fixture
def shopify(sandbox: Sandbox) -> Iterator[Broker]:
    """A broker with the Shopify route configured."""
    with running_broker(
        sandbox.url, BROKER_SHOPIFY_SECRET=SECRET, BROKER_SHOPIFY_SHOP=STORE
    ) as running:
        yield running


def get(broker: Broker, params: list[tuple[str, str]]) -> object:
    return broker.client.get(f"/shopify/token?{urlencode(params)}", headers={"Origin": ORIGIN})


def test_documented_example_signature() -> None:
    """Shopify's own worked example (secret "hush") gives its documented signature."""
    query = (
        "extra=1&extra=2&shop=shop-name.myshopify.com&path_prefix=%2Fapps%2Fawesome_reviews"
        "&timestamp=1317327555"
        "&signature=a9718877bea71c2484f91608a7eaea1532bdf71f5c56825065fa4ccabe549ef3"
    )
    expected = "a9718877bea71c2484f91608a7eaea1532bdf71f5c56825065fa4ccabe549ef3"
    assert proxy_signature(parse_qsl(query), "hush") == expected


def test_signed_request_gets_a_token_for_the_customer(shopify: Broker) -> None:
    """A genuine proxy request answers /tokens' shape, uncached, no CORS; the token works."""
    answer = shopify.client.get(
        f"/shopify/token?{urlencode(shopify_signed(proxy_query('7301')))}",
        headers={"Origin": ORIGIN},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"token", "token_type", "expires_in", "expires_at"}
    assert body["token_type"] == "Bearer"
    assert answer.headers["cache-control"] == "no-store"
    assert "access-control-allow-origin" not in answer.headers
    history = shopify.client.post(
        READ_PATH, json={}, headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert history.status_code == 200
    mismatch = shopify.client.post(
        READ_PATH,
        json={"customer": {"shopid": "7302"}},
        headers={"Authorization": f"Bearer {body['token']}"},
    )
    assert mismatch.json()["id"] == "customer_identity_does_not_match_token"


def test_repeated_parameters_are_joined_with_commas(shopify: Broker) -> None:
    """A parameter given twice is signed as name=a,b, as Shopify does."""
    params = shopify_signed([*proxy_query(), ("extra", "1"), ("extra", "2")])
    answer = shopify.client.get(f"/shopify/token?{urlencode(params)}")
    assert answer.status_code == 200


def refused(broker: Broker, params: list[tuple[str, str]], error_id: str) -> None:
    answer = broker.client.get(f"/shopify/token?{urlencode(params)}", headers={"Origin": ORIGIN})
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["id"] == error_id
    assert body["request_id"] == answer.headers["x-request-id"]
    assert "token" not in body
    assert "access-control-allow-origin" not in answer.headers


def test_missing_signature_is_refused(shopify: Broker) -> None:
    """No signature: 401 invalid_proxy_signature."""
    refused(shopify, proxy_query(), "invalid_proxy_signature")


def test_signature_with_another_secret_is_refused(shopify: Broker) -> None:
    """A signature made with another app's secret: 401 invalid_proxy_signature."""
    refused(
        shopify,
        shopify_signed(proxy_query(), "another-apps-secret-0000"),
        "invalid_proxy_signature",
    )


def test_tampered_customer_is_refused(shopify: Broker) -> None:
    """Changing logged_in_customer_id after Shopify signed breaks the signature."""
    params = [
        (k, "9999" if k == "logged_in_customer_id" else v)
        for k, v in shopify_signed(proxy_query("7301"))
    ]
    refused(shopify, params, "invalid_proxy_signature")


def test_added_parameter_is_refused(shopify: Broker) -> None:
    """A parameter added after signing breaks the signature."""
    refused(shopify, [*shopify_signed(proxy_query()), ("extra", "1")], "invalid_proxy_signature")


def test_two_signatures_are_refused(shopify: Broker) -> None:
    """A second signature parameter (even a copy of the right one) is refused."""
    params = shopify_signed(proxy_query())
    refused(shopify, [*params, params[-1]], "invalid_proxy_signature")


def test_another_store_is_refused(shopify: Broker) -> None:
    """A correctly signed request for another store: 401 invalid_proxy_signature."""
    refused(
        shopify,
        shopify_signed(proxy_query(shop="other-store.myshopify.com")),
        "invalid_proxy_signature",
    )


@pytest.mark.parametrize("offset", [-301, 301, -3600])
def test_timestamp_outside_five_minutes_is_refused(shopify: Broker, offset: int) -> None:
    """A signed timestamp more than 5 minutes off our clock (either way) is refused."""
    stamp = str(int(time.time()) + offset)
    refused(shopify, shopify_signed(proxy_query(timestamp=stamp)), "invalid_proxy_signature")


@pytest.mark.parametrize(
    "stamp",
    ["", "soon", "1e9", "-5", "\uff11\uff12\uff13", "\u00b2", "9" * 5000, "0" * 13, " 1"],
)  # full-width and superscript digits, 5000 digits (int() refuses), 13 digits
def test_malformed_timestamp_is_refused(shopify: Broker, stamp: str) -> None:
    """A timestamp that is not whole seconds is refused, signed or not."""
    refused(shopify, shopify_signed(proxy_query(timestamp=stamp)), "invalid_proxy_signature")


@pytest.mark.parametrize("name", ["logged_in_customer_id", "shop", "timestamp", "path_prefix"])
def test_a_parameter_the_proxy_sends_once_given_twice_is_a_bad_signature(
    shopify: Broker, name: str
) -> None:
    """A correctly signed request naming a once-only parameter twice: invalid_proxy_signature."""
    params = proxy_query()
    value = dict(params)[name]
    refused(shopify, shopify_signed([*params, (name, value)]), "invalid_proxy_signature")


def test_a_correctly_signed_5000_digit_timestamp_is_refused_over_the_wire(sandbox: Sandbox) -> None:
    """A 5000-digit timestamp, signed, sent on a real socket: 401, never a 500."""
    with running_broker(
        sandbox.url, wire=True, BROKER_SHOPIFY_SECRET=SECRET, BROKER_SHOPIFY_SHOP=STORE
    ) as running:
        params = shopify_signed(proxy_query(timestamp="9" * 5000))
        answer = running.client.get(f"/shopify/token?{urlencode(params)}")
    assert answer.status_code == 401 and answer.json()["id"] == "invalid_proxy_signature"


def test_missing_timestamp_is_refused(shopify: Broker) -> None:
    """A signed request without a timestamp is refused."""
    params = [(k, v) for k, v in proxy_query() if k != "timestamp"]
    refused(shopify, shopify_signed(params), "invalid_proxy_signature")


def test_logged_out_visitor_is_refused(shopify: Broker) -> None:
    """Shopify's empty logged_in_customer_id (nobody signed in): 401 customer_not_logged_in."""
    refused(shopify, shopify_signed(proxy_query(None)), "customer_not_logged_in")
    params = [(k, v) for k, v in proxy_query() if k != "logged_in_customer_id"]
    refused(shopify, shopify_signed(params), "customer_not_logged_in")


def test_unconfigured_route_is_not_found(broker: Broker) -> None:
    """Without BROKER_SHOPIFY_SECRET and _SHOP the route is 404 not_found, signed or not."""
    answer = broker.client.get(f"/shopify/token?{urlencode(shopify_signed(proxy_query()))}")
    assert answer.status_code == 404
    assert answer.json()["id"] == "not_found"


def test_other_methods_are_refused(shopify: Broker) -> None:
    """POST is 405 method_not_allowed."""
    answer = shopify.client.post(f"/shopify/token?{urlencode(shopify_signed(proxy_query()))}")
    assert answer.status_code == 405


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BROKER_SHOPIFY_SECRET": SECRET}, "BROKER_SHOPIFY_SHOP"),
        ({"BROKER_SHOPIFY_SHOP": STORE}, "BROKER_SHOPIFY_SECRET"),
        ({"BROKER_SHOPIFY_SECRET": "short", "BROKER_SHOPIFY_SHOP": STORE}, "BROKER_SHOPIFY_SECRET"),
        (
            {"BROKER_SHOPIFY_SECRET": SECRET, "BROKER_SHOPIFY_SHOP": "shop.example"},
            "BROKER_SHOPIFY_SHOP",
        ),
    ],
)
def test_half_or_bad_configuration_is_refused(env: dict[str, str], named: str) -> None:
    """Start-up refuses one Shopify variable without the other, or a bad value, naming it."""
    with pytest.raises(ConfigError) as refusal:
        make_settings(**env)
    assert any(problem.startswith(named) for problem in refusal.value.problems)
    assert SECRET not in str(refusal.value)
