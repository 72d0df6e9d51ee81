"""Stopping background tasks: bounded, and deaf to a swallowed cancellation."""

from __future__ import annotations

import asyncio
import contextlib

from structlog.testing import capture_logs

from broker.tasks import stop


async def test_a_task_that_swallows_one_cancellation_is_still_stopped() -> None:
    """A loop that turns its first cancellation into a retry (as a cancelled ``asyncio.timeout``
    can on Python 3.11) is cancelled again and ends."""
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await stop([task], grace=0.05)
    assert swallowed == 1 and task.cancelled()


async def test_a_task_that_never_stops_is_named_and_left() -> None:
    """A task deaf to every cancellation does not hang the caller: after the attempts, stop
    returns and logs the task's name."""
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    task = asyncio.create_task(deaf(), name="deaf-task")
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await stop([task, None], grace=0.02)
    assert not task.done()
    assert [e["tasks"] for e in logs if e["event"] == "tasks.unstoppable"] == [["deaf-task"]]
    release.set()
    task.cancel()
    await asyncio.wait([task], timeout=1)
    assert task.done()


async def test_finished_and_missing_tasks_are_fine() -> None:
    """Tasks already done, and None for a task never started, need no waiting."""

    async def quick() -> None:
        return None

    task = asyncio.create_task(quick())
    await task
    with capture_logs() as logs:
        await stop([task, None])
    assert logs == []
