"""What tests share besides fixtures: the test deployment's keys and settings, small stand-ins.

Fixtures live in ``conftest.py`` and use these; test modules import from here, never from the
conftest.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx2
from redis.asyncio import Redis

from broker.config.lifetimes import Lifetimes
from broker.config.settings import Settings, parse
from broker.web.connections import IDLE_SECONDS

# Limits for a test's long-lived HTTP client: an idle connection is dropped well before a server
# closes it as idle (the broker and uvicorn at 5 s), as deploy/README.md tells a proxy to do; a
# connection reused just as the server closes it fails ("disconnected without a response").
KEEPALIVE = httpx2.Limits(keepalive_expiry=IDLE_SECONDS / 2)

SHOP = "test-shop"
SECRET_A = base64.b64encode(b"A" * 16 + b"secret-key-a-0123456789").decode()
SECRET_B = base64.b64encode(b"B" * 16 + b"secret-key-b-0123456789").decode()
ISSUER_KEY = "issuer-key-0123456789abcdef0123456789"
ISSUER_KEY_OLD = "issuer-key-old-0123456789abcdef012345"

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
    """Parsed settings of :func:`broker_env`."""
    return parse(broker_env(**overrides))


# The lifetimes the test deployment's settings derive (tests replace what they shorten).
LIFETIMES = Lifetimes.of(make_settings())


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
