"""The budget of a read that waited on another request's lease."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from broker.errors import UpstreamTimeout


def within(load: Callable[[], Awaitable[bytes]], deadline: float) -> Callable[[], Awaitable[bytes]]:
    """``load`` with what is left of a waiting read's budget (the loop's clock): a read that
    waited on another request's lease answers within one upstream timeout, not two."""

    async def bounded() -> bytes:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise UpstreamTimeout()
        try:
            async with asyncio.timeout(left):
                return await load()
        except TimeoutError:
            raise UpstreamTimeout() from None

    return bounded
