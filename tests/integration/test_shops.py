"""Several shops from one broker (spec 2.1), on a real Redis: the same customer id in two shops
shares nothing (tokens, cached lists, near tier, limits, idempotency records), the issuer key
selects its shop, CORS follows the path's shop, and Bubblehouse is called for the right shop
with that shop's key."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx2
import jwt
import pytest

from broker.config.settings import Settings, parse
from broker.upstream.transport import Answer, FakeTransport
from broker.web.app import create_app
from tests.servers import RedisProcess, serve_app
from tests.support import flush

VERSION = "v2023061"
SECRET_NORTH = base64.b64encode(b"N" * 40).decode()
SECRET_SOUTH = base64.b64encode(b"S" * 40).decode()
KEY_NORTH = "north-issuer-key-0123456789abcdef0123"
KEY_SOUTH = "south-issuer-key-0123456789abcdef0123"
SHOPS = f"""
[shops.north]
signing_keys = ["k1:{SECRET_NORTH}"]
issuer_keys = ["{KEY_NORTH}"]
cors_origins = ["https://north.example"]

[shops.south]
signing_keys = ["k1:{SECRET_SOUTH}"]
issuer_keys = ["{KEY_SOUTH}"]
cors_origins = ["https://south.example"]
"""
SECRETS = {"north": b"N" * 40, "south": b"S" * 40}


class TwoShopBubblehouse:
    """Bubblehouse for two shops, at the transport: it checks each call's token with the shop's
    own secret (``sub`` naming that shop) and keeps referrals per shop and customer."""

    def __init__(self) -> None:
        self.referrals: dict[tuple[str, str], list[str]] = {}
        self.calls: list[tuple[str, str, str]] = []  # (shop of the path, function, customer)

    def __call__(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        shop, function = path.split("/")[3:5]
        token = headers["Authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, SECRETS[shop], algorithms=["HS256"], audience="BH")
        owner, _, customer = claims["sub"].partition("/")
        assert owner == shop, "a token of another shop reached this shop's path"
        self.calls.append((shop, function, customer))
        history = self.referrals.setdefault((shop, customer), [])
        if function == "Refer2":
            history.append(json.loads(body)["destination"])
            return Answer(200, {}, json.dumps({"message": f"sent for {shop}"}).encode())
        answer = {"shop": shop, "customer": customer, "referrals": list(history)}
        return Answer(200, {}, json.dumps(answer).encode())


@pytest.fixture
def shops_env(tmp_path: Path, redis_session: RedisProcess) -> dict[str, str]:
    asyncio.run(flush(redis_session.url))
    path = tmp_path / "shops.toml"
    path.write_text(SHOPS)
    return {
        "BROKER_SHOPS_FILE": str(path),
        "BROKER_UPSTREAM_URL": "http://127.0.0.1:9",
        "REDIS_URL": redis_session.url,
        "BROKER_RATE_LIMIT_READ": "4/60s",
        "LOG_LEVEL": "warning",
    }


class Served:
    """A two-shop broker served on loopback, with helpers speaking for either shop."""

    def __init__(self, client: httpx2.Client, upstream: TwoShopBubblehouse) -> None:
        self.client = client
        self.upstream = upstream

    def token(self, issuer_key: str, customer: str = "alice", **body: str) -> httpx2.Response:
        return self.client.post(
            "/tokens",
            json={"customer_id": customer, **body},
            headers={"Authorization": f"Bearer {issuer_key}"},
        )

    def bearer(self, issuer_key: str, customer: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(issuer_key, customer).json()['token']}"}

    def read(self, shop: str, headers: dict[str, str]) -> httpx2.Response:
        return self.client.post(
            f"/api/{VERSION}/{shop}/CustomerReferrals2", json={}, headers=headers
        )

    def send(self, shop: str, headers: dict[str, str], to: str) -> httpx2.Response:
        body = {"channel": "email", "destination": to}
        return self.client.post(f"/api/{VERSION}/{shop}/Refer2", json=body, headers=headers)


@pytest.fixture
def served(shops_env: dict[str, str]) -> Iterator[Served]:
    settings: Settings = parse(shops_env)
    upstream = TwoShopBubblehouse()
    app = create_app(settings, upstream_transport=FakeTransport(upstream))
    with serve_app(app) as server, httpx2.Client(base_url=server.url, timeout=10) as client:
        yield Served(client, upstream)


def test_the_issuer_key_selects_the_shop_and_a_body_naming_another_is_refused(
    served: Served,
) -> None:
    """POST /tokens mints for the issuer key's shop; a body's shop must be that shop (401)."""
    north = served.token(KEY_NORTH)
    assert north.status_code == 200
    claims = jwt.decode(north.json()["token"], options={"verify_signature": False})
    assert claims["sub"] == "north/alice"
    assert served.token(KEY_NORTH, shop="north").status_code == 200
    refused = served.token(KEY_NORTH, shop="south")
    assert refused.status_code == 401 and refused.json()["id"] == "invalid_issuer_key"
    assert served.token("x" * 40).json()["id"] == "invalid_issuer_key"


def test_a_token_of_one_shop_is_refused_on_another_shops_path(served: Served) -> None:
    """The path's shop's keys verify: north's token on south's path is 401 invalid_token, an
    unconfigured shop is 404 not_found, and Bubblehouse hears of neither."""
    north = served.bearer(KEY_NORTH)
    refused = served.read("south", north)
    assert refused.status_code == 401 and refused.json()["id"] == "invalid_token"
    unknown = served.read("west", north)
    assert unknown.status_code == 404 and unknown.json()["id"] == "not_found"
    assert served.upstream.calls == []
    assert served.read("north", north).status_code == 200


def test_the_same_customer_in_two_shops_shares_no_cached_list(served: Served) -> None:
    """alice of north and alice of south: each list comes from her own shop's Bubblehouse path
    with that shop's key, a send in north never invalidates south's cached list, and south's
    list is never served for north."""
    north, south = served.bearer(KEY_NORTH), served.bearer(KEY_SOUTH)
    served.upstream.referrals[("south", "alice")] = ["south-friend@example.com"]
    first_north = served.read("north", north)
    first_south = served.read("south", south)
    assert first_north.json() == {"shop": "north", "customer": "alice", "referrals": []}
    assert first_south.json()["shop"] == "south"
    assert first_south.json()["referrals"] == ["south-friend@example.com"]
    assert "hit" in served.read("south", south).headers["cache-status"]
    assert "hit" in served.read("north", north).headers["cache-status"]

    sent = served.send("north", north, "friend@example.com")
    assert sent.status_code == 200 and sent.json() == {"message": "sent for north"}
    after_north = served.read("north", north)
    assert after_north.json()["referrals"] == ["friend@example.com"]
    after_south = served.read("south", south)
    assert "hit" in after_south.headers["cache-status"]
    assert after_south.json()["referrals"] == ["south-friend@example.com"]
    reads = [(shop, customer) for shop, fn, customer in served.upstream.calls if fn != "Refer2"]
    assert reads == [("north", "alice"), ("south", "alice"), ("north", "alice")]


def test_limits_are_counted_apart_per_shop(served: Served) -> None:
    """alice's read limit in north (4 a minute here) is spent without touching south's."""
    north, south = served.bearer(KEY_NORTH), served.bearer(KEY_SOUTH)
    assert [served.read("north", north).status_code for _ in range(5)] == [200] * 4 + [429]
    assert served.read("south", south).status_code == 200
    assert served.read("south", south).headers["ratelimit"].startswith('"read";r=2')


def test_idempotency_keys_are_kept_apart_per_shop(served: Served) -> None:
    """The same Idempotency-Key by alice in two shops is two sends; a repeat in one shop replays
    that shop's answer only."""
    key = {"Idempotency-Key": "send-1"}
    north = {**served.bearer(KEY_NORTH), **key}
    south = {**served.bearer(KEY_SOUTH), **key}
    first = served.send("north", north, "one@example.com")
    other = served.send("south", south, "two@example.com")  # another body: no 409 across shops
    assert first.status_code == 200 and other.status_code == 200
    assert other.json() == {"message": "sent for south"}
    replay = served.send("north", north, "one@example.com")
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.json() == {"message": "sent for north"}
    sends = [(shop, c) for shop, fn, c in served.upstream.calls if fn == "Refer2"]
    assert sends == [("north", "alice"), ("south", "alice")]


def test_invalidations_drop_only_the_issuer_keys_shop(served: Served) -> None:
    """POST /invalidations with south's key drops south's alice, never north's."""
    north, south = served.bearer(KEY_NORTH), served.bearer(KEY_SOUTH)
    served.read("north", north)
    served.read("south", south)
    dropped = served.client.post(
        "/invalidations",
        json={"customer_id": "alice"},
        headers={"Authorization": f"Bearer {KEY_SOUTH}"},
    )
    assert dropped.status_code == 204
    assert "hit" in served.read("north", north).headers["cache-status"]
    assert "fwd=miss" in served.read("south", south).headers["cache-status"]
    named = served.client.post(
        "/invalidations",
        json={"customer_id": "alice", "shop": "north"},
        headers={"Authorization": f"Bearer {KEY_SOUTH}"},
    )
    assert named.status_code == 401 and named.json()["id"] == "invalid_issuer_key"


def test_cors_allows_the_paths_shop_origins_only(served: Served) -> None:
    """A browser route answers CORS for its own shop's origins; another shop's origin gets none;
    a preflight likewise."""
    north = served.bearer(KEY_NORTH)
    own = served.read("north", {**north, "Origin": "https://north.example"})
    assert own.headers["access-control-allow-origin"] == "https://north.example"
    other = served.read("north", {**north, "Origin": "https://south.example"})
    assert "access-control-allow-origin" not in other.headers
    path = f"/api/{VERSION}/south/Refer2"
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = served.client.options(path, headers={**preflight, "Origin": "https://south.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://south.example"
    denied = served.client.options(path, headers={**preflight, "Origin": "https://north.example"})
    assert "access-control-allow-origin" not in denied.headers


def test_metrics_count_requests_by_configured_shop(served: Served) -> None:
    """broker_requests_total carries the shop of each request: a configured slug, or empty."""
    served.read("north", served.bearer(KEY_NORTH))
    served.read("west", served.bearer(KEY_NORTH))
    text = served.client.get("/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("broker_requests_total{")]
    assert any('shop="north"' in line and 'status="200"' in line for line in lines)
    assert any('shop=""' in line and 'status="404"' in line for line in lines)
    assert not any('shop="west"' in line for line in lines)


def test_bigcommerce_route_answers_the_origins_of_its_shops_only(
    tmp_path: Path, shops_env: dict[str, str]
) -> None:
    """With south alone on BigCommerce, /bigcommerce/token carries CORS for south's origin
    and none for north's (spec 4: the shop it is configured for)."""
    path = tmp_path / "shops-bigcommerce.toml"
    path.write_text(
        SHOPS
        + 'bigcommerce = { store_hash = "south1", client_id = "south-app", '
        + 'client_secret = "a-bigcommerce-client-secret-0123456789" }\n'
    )
    settings = parse({**shops_env, "BROKER_SHOPS_FILE": str(path)})
    app = create_app(settings, upstream_transport=FakeTransport(TwoShopBubblehouse()))
    preflight = {"Access-Control-Request-Method": "POST"}
    with serve_app(app) as server, httpx2.Client(base_url=server.url, timeout=10) as client:
        south = client.options(
            "/bigcommerce/token", headers={**preflight, "Origin": "https://south.example"}
        )
        north = client.options(
            "/bigcommerce/token", headers={**preflight, "Origin": "https://north.example"}
        )
        refused = client.post(
            "/bigcommerce/token", json={"token": "x"}, headers={"Origin": "https://south.example"}
        )
    assert south.headers["access-control-allow-origin"] == "https://south.example"
    assert "access-control-allow-origin" not in north.headers
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://south.example"
