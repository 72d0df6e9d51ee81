"""Shared fixtures: test settings, a real redis-server, the sandbox and the broker as servers.

Plain helpers (keys, settings, stand-ins) are in ``tests/support.py``; the servers in
``tests/servers.py`` and ``tests/stack.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest

from broker.config.settings import Settings
from broker.store.store import Store, open_store
from tests.servers import RedisProcess, RunningServer, serve_app
from tests.stack import Broker, Sandbox, running_broker, sandbox_app
from tests.support import CHROMIUM, CHROMIUM_ARGS, flush, make_settings


@pytest.fixture
def settings() -> Settings:
    """Valid settings with two signing keys and two issuer keys."""
    return make_settings()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (no browser download); one a module.
    Expectations wait up to 15 s: the suite runs four workers on two cores, and a page that
    waits on the broker, the sandbox and a demo server can pass Playwright's 5 s default."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)

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
def sandbox_server() -> Iterator[RunningServer]:
    """The sandbox upstream as a real HTTP server, shared by the session."""
    with serve_app(sandbox_app()) as server:
        yield server


@pytest.fixture(scope="session")
def sandbox_http(sandbox_server: RunningServer) -> Iterator[httpx2.Client]:
    """One HTTP client for the shared sandbox's control API, kept for the session."""
    with httpx2.Client(base_url=sandbox_server.url, timeout=10) as client:
        yield client


@pytest.fixture
def sandbox(sandbox_server: RunningServer, sandbox_http: httpx2.Client) -> Sandbox:
    """The sandbox's control API, reset to its seeded state for this test."""
    control = Sandbox(sandbox_server.url, sandbox_http)
    control.reset()
    return control


@pytest.fixture
def broker(sandbox: Sandbox) -> Iterator[Broker]:
    """A broker with default settings and the in-process store, in front of the sandbox (the
    test talks to it in process; it calls the sandbox over a real socket)."""
    with running_broker(sandbox.url) as running:
        yield running


@pytest.fixture
def wire_broker(sandbox: Sandbox) -> Iterator[Broker]:
    """The same broker served by uvicorn on a loopback port, for what only a socket shows."""
    with running_broker(sandbox.url, wire=True) as running:
        yield running


@pytest.fixture(params=["redis", "memory"])
async def store(
    request: pytest.FixtureRequest, redis_session: RedisProcess
) -> AsyncIterator[Store]:
    """A Store on the shared redis-server (flushed) or on process memory.

    Redis counts as down after 2 s without a reply rather than the service's 0.5 s: these tests
    are about what the store does while Redis answers, on a machine busy with the whole suite
    (tests/integration/test_store.py takes Redis away on purpose, with the service's bounds).
    """
    env = {}
    if request.param == "redis":
        await flush(redis_session.url)
        env["REDIS_URL"] = redis_session.url
    opened = await open_store(make_settings(**env), redis_timeout=2.0)
    yield opened
    await opened.aclose()
