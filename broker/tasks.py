"""Stopping background tasks so that shutdown can never hang.

A task is cancelled, then awaited for a bounded time, and cancelled again while it still runs:
on Python 3.11 a cancellation that lands as an ``asyncio.timeout`` expires can be swallowed
(the task sees a ``TimeoutError``, which loops that outlive Redis failures catch), so one
``cancel()`` and an unbounded ``await`` may wait forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

log = structlog.get_logger("broker.tasks")

ATTEMPTS = 3


async def stop(tasks: Iterable[asyncio.Task[None] | None], *, grace: float = 1.0) -> None:
    """Cancel ``tasks`` and wait for them, at most ``grace`` seconds per attempt."""
    pending = {task for task in tasks if task is not None and not task.done()}
    for _ in range(ATTEMPTS):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=grace)
    if pending:
        log.error("tasks.unstoppable", tasks=sorted(task.get_name() for task in pending))
