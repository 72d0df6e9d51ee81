"""The hand-written proxies the broker is measured against, served like ``broker serve``.

``redis_app``: a bare Starlette endpoint doing one Redis GET of a 2 KB value and returning it.
``aiohttp_app``: a bare Starlette endpoint doing one aiohttp GET to the sandbox and returning
the body. Both answer any path and method, so one wrk script drives them and the broker alike.

Run one: ``python -m tests.benchmarks.baselines redis|aiohttp`` with ``PORT``,
``WEB_CONCURRENCY`` and ``BASELINE_REDIS_URL`` or ``BASELINE_UPSTREAM_URL`` (+
``BASELINE_TOKEN``) in the environment. It goes through :func:`broker.web.server.run_factory`, the
same server, settings and worker count as the broker.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator

import aiohttp
from redis.asyncio import BlockingConnectionPool, Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY_KEY = "bench:baseline:body"


def redis_app() -> Starlette:
    """One Redis GET per request, body returned as stored."""
    url = os.environ["BASELINE_REDIS_URL"]
    state: dict[str, Redis] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = BlockingConnectionPool.from_url(url, max_connections=64, timeout=2.0)
        state["redis"] = Redis.from_pool(pool)
        yield
        await state["redis"].aclose()

    async def get(request: Request) -> Response:
        body = await state["redis"].get(BODY_KEY)
        return Response(body, media_type="application/json")

    return Starlette(
        routes=[Route("/{path:path}", get, methods=["GET", "POST"])], lifespan=lifespan
    )


def aiohttp_app() -> Starlette:
    """One aiohttp GET to the sandbox per request, body returned as received."""
    url = os.environ["BASELINE_UPSTREAM_URL"]
    headers = {"Authorization": f"Bearer {os.environ['BASELINE_TOKEN']}"}
    state: dict[str, aiohttp.ClientSession] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
        )
        yield
        await state["session"].close()

    async def get(request: Request) -> Response:
        async with state["session"].get(url, headers=headers) as answer:
            body = await answer.read()
        return Response(body, status_code=answer.status, media_type="application/json")

    return Starlette(
        routes=[Route("/{path:path}", get, methods=["GET", "POST"])], lifespan=lifespan
    )


if __name__ == "__main__":
    from broker.web.server import run_factory

    kind = sys.argv[1]
    factory = {"redis": "redis_app", "aiohttp": "aiohttp_app"}[kind]
    run_factory(
        f"tests.benchmarks.baselines:{factory}",
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        workers=int(os.environ.get("WEB_CONCURRENCY", "1")),
    )
