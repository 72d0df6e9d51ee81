"""Shared fixtures: test settings, a real redis-server, the sandbox and the broker as servers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from broker.settings import Settings, parse
from broker.store import Store, open_store
from tests.servers import RedisProcess

SHOP = "test-shop"
SECRET_A = base64.b64encode(b"A" * 16 + b"secret-key-a-0123456789").decode()
SECRET_B = base64.b64encode(b"B" * 16 + b"secret-key-b-0123456789").decode()
ISSUER_KEY = "issuer-key-0123456789abcdef"
ISSUER_KEY_OLD = "issuer-key-old-0123456789abc"


def broker_env(**overrides: str) -> dict[str, str]:
    """A complete, valid environment for the broker, with overrides."""
    env = {
        "BROKER_SHOP": SHOP,
        "BROKER_SIGNING_KEYS": f"key-a:{SECRET_A},key-b:{SECRET_B}",
        "BROKER_ISSUER_KEYS": f"{ISSUER_KEY},{ISSUER_KEY_OLD}",
        "BROKER_UPSTREAM_URL": "http://127.0.0.1:9",
        "BROKER_CORS_ORIGINS": "https://shop.example",
        "LOG_LEVEL": "info",
    }
    env.update(overrides)
    return env


def make_settings(**overrides: str) -> Settings:
    return parse(broker_env(**overrides))


@pytest.fixture
def settings() -> Settings:
    """Valid settings with two signing keys and two issuer keys."""
    return make_settings()


CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium, headless, with nothing reaching out to the network on its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (no browser download); one a module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisProcess]:
    """One real redis-server for the session (tests flush what they use)."""
    server = RedisProcess().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    """A real redis-server of the test's own, which it may kill and restart."""
    server = RedisProcess().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Any]:
    """The sandbox upstream as a real HTTP server, shared by the session."""
    from tests.servers import serve_app
    from tests.stack import sandbox_app

    with serve_app(sandbox_app()) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: Any) -> Any:
    """The sandbox's control API, reset to its seeded state for this test."""
    from tests.stack import Sandbox

    control = Sandbox(sandbox_server.url)
    control.reset()
    return control


@pytest.fixture
def broker(sandbox: Any) -> Iterator[Any]:
    """A broker with default settings and the in-process store, in front of the sandbox."""
    from tests.stack import running_broker

    with running_broker(sandbox.url) as running:
        yield running


class Gated:
    """A stand-in for an upstream call: counts calls, may wait for a gate, may fail."""

    def __init__(
        self,
        result: Any,
        *,
        gate: asyncio.Event | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.result = result
        self.gate = gate
        self.error = error
        self.calls = 0
        self.started = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def flush(url: str) -> None:
    """Empty a Redis database."""
    client = Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@pytest.fixture(params=["redis", "memory"])
async def store(
    request: pytest.FixtureRequest, redis_session: RedisProcess
) -> AsyncIterator[Store]:
    """A Store on the shared redis-server (flushed) or on process memory."""
    env = {}
    if request.param == "redis":
        await flush(redis_session.url)
        env["REDIS_URL"] = redis_session.url
    opened = await open_store(make_settings(**env))
    yield opened
    await opened.aclose()
