"""The whole flow for tests: the sandbox as a real HTTP server, the broker in front of it.

The broker is the app ``broker serve`` runs. By default a test talks to it in process (Starlette's
test client runs the same ASGI app, lifespan included, with no socket between); ``wire=True``
serves it over a real loopback socket, for what only the wire shows (raw bytes, connection
handling, browsers, other processes). Its calls to the sandbox always cross a real socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypedDict

import httpx2
from starlette.testclient import TestClient

from broker.config.settings import Settings
from broker.rules.tokens import TokenMinter
from broker.web.app import create_app
from broker_dev.sandbox import SandboxConfig, create_sandbox_app
from broker_dev.sandbox.bigcommerce import BigCommerceStore
from tests.servers import serve_app
from tests.support import ISSUER_KEY, KEEPALIVE, SHOP, make_settings

VERSION = "v2023061"
# The base URL of a broker served in process: a test that needs a socket asks for ``wire=True``.
IN_PROCESS = "http://broker.in-process"
READ_PATH = f"/api/{VERSION}/{SHOP}/CustomerReferrals2"
WRITE_PATH = f"/api/{VERSION}/{SHOP}/Refer2"


@dataclass
class Sandbox:
    """The sandbox's control API."""

    url: str
    # A client shared across tests (its owner closes it); without one, a client per call. A
    # client costs about 50 ms of CPU to make (its TLS context), and every test resets.
    http: httpx2.Client | None = None

    @contextlib.contextmanager
    def _client(self) -> Iterator[httpx2.Client]:
        if self.http is not None:
            yield self.http
            return
        with httpx2.Client(base_url=self.url, timeout=10) as client:
            yield client

    def reset(self) -> None:
        with self._client() as client:
            client.post("/_sandbox/reset").raise_for_status()

    def fault(self, **fault: Any) -> None:
        with self._client() as client:
            client.post("/_sandbox/faults", json=fault).raise_for_status()

    def clear_faults(self) -> None:
        with self._client() as client:
            client.delete("/_sandbox/faults").raise_for_status()

    def calls(self) -> dict[str, int]:
        with self._client() as client:
            counts: dict[str, int] = client.get("/_sandbox/calls").json()
        return counts

    def total_calls(self) -> int:
        return sum(self.calls().values())

    def requests(self) -> list[dict[str, Any]]:
        with self._client() as client:
            seen: list[dict[str, Any]] = client.get("/_sandbox/requests").json()["requests"]
        return seen


class BigCommerceEnv(TypedDict):
    BROKER_BIGCOMMERCE_CLIENT_ID: str
    BROKER_BIGCOMMERCE_CLIENT_SECRET: str
    BROKER_BIGCOMMERCE_STORE_HASH: str


def bigcommerce_env(store: BigCommerceStore | None = None) -> BigCommerceEnv:
    """The broker's BROKER_BIGCOMMERCE_* for a look-alike store (the sandbox's by default)."""
    store = store or BigCommerceStore()
    return {
        "BROKER_BIGCOMMERCE_CLIENT_ID": store.client_id,
        "BROKER_BIGCOMMERCE_CLIENT_SECRET": store.client_secret,
        "BROKER_BIGCOMMERCE_STORE_HASH": store.store_hash,
    }


def sandbox_app(settings: Settings | None = None, **config: Any) -> Any:
    settings = settings or make_settings()
    return create_sandbox_app(
        SandboxConfig(
            shop=settings.first_shop.slug,
            keys={key.kid: key.secret.reveal() for key in settings.first_shop.signing_keys},
            **config,
        )
    )


@dataclass
class Broker:
    """A running broker and what a test needs to talk to it."""

    url: str
    settings: Settings
    client: httpx2.Client

    def token(
        self, customer: str = "alice", email: str | None = None, ttl: int | None = None
    ) -> str:
        return TokenMinter(self.settings).customer_token(customer, email, ttl).token

    def auth(self, customer: str = "alice", email: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(customer, email)}"}

    def issuer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ISSUER_KEY}"}

    def read(self, customer: str = "alice", **kwargs: Any) -> httpx2.Response:
        headers = {**self.auth(customer), **kwargs.pop("headers", {})}
        return self.client.post(READ_PATH, headers=headers, **kwargs)

    def refer(
        self, body: dict[str, Any], customer: str = "alice", **kwargs: Any
    ) -> httpx2.Response:
        headers = {**self.auth(customer), **kwargs.pop("headers", {})}
        return self.client.post(WRITE_PATH, json=body, headers=headers, **kwargs)


@contextlib.contextmanager
def running_broker(upstream_url: str, *, wire: bool = False, **env: str) -> Iterator[Broker]:
    """A broker (in-process store unless REDIS_URL is given) in front of ``upstream_url``.

    In process unless ``wire``: then served by uvicorn on a free loopback port.
    """
    settings = make_settings(BROKER_UPSTREAM_URL=upstream_url, **env)
    app = create_app(settings)
    if wire:
        with (
            serve_app(app) as server,
            httpx2.Client(base_url=server.url, timeout=30, limits=KEEPALIVE) as client,
        ):
            yield Broker(server.url, settings, client)
        return
    with TestClient(
        app,
        base_url=IN_PROCESS,
        raise_server_exceptions=False,
        follow_redirects=False,
        client=("127.0.0.1", 50000),
    ) as in_process:
        yield Broker(IN_PROCESS, settings, in_process)
