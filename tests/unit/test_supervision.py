"""The supervisor restarts a crashed task, and gives up when it keeps crashing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tidings.supervision import Fatal, TaskState, supervise

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]


class Counted:
    """A task that counts how often it was started; ``body`` gets the run's number (from 1)."""

    def __init__(self, body: Callable[[int], Awaitable[None]]) -> None:
        self.runs = 0
        self._body = body

    async def __call__(self) -> None:
        self.runs += 1
        await self._body(self.runs)


async def test_a_crashed_task_is_started_again() -> None:
    stop = asyncio.Event()

    async def flaky(run: int) -> None:
        if run < 3:
            raise RuntimeError("a bug")
        await stop.wait()

    state, task_body = TaskState("flaky"), Counted(flaky)
    task = asyncio.create_task(supervise(state, task_body, stop, delay=1.0))
    await asyncio.sleep(5)
    assert task_body.runs == 3 and state.running and not state.failed
    stop.set()
    await task
    assert len(state.crashes) == 2


async def test_a_task_that_keeps_crashing_is_fatal() -> None:
    async def broken() -> None:
        raise RuntimeError("always")

    state = TaskState("broken")
    with pytest.raises(Fatal):
        await supervise(state, broken, asyncio.Event(), max_crashes=3, window=60, delay=1.0)
    assert state.failed and len(state.crashes) == 3


async def test_crashes_spread_out_in_time_are_forgiven() -> None:
    stop = asyncio.Event()

    async def rarely(run: int) -> None:
        if run == 6:
            stop.set()
            return
        await asyncio.sleep(100)
        raise RuntimeError("now and then")

    state, task_body = TaskState("rarely"), Counted(rarely)
    await supervise(state, task_body, stop, max_crashes=3, window=60, delay=1.0)
    assert task_body.runs == 6 and not state.failed


async def test_stopping_ends_the_supervisor() -> None:
    stop = asyncio.Event()

    async def until_stopped() -> None:
        await stop.wait()

    task = asyncio.create_task(supervise(TaskState("t"), until_stopped, stop))
    await asyncio.sleep(1)
    stop.set()
    await asyncio.wait_for(task, 5)
