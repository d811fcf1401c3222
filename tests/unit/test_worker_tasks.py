"""worker.tasks.within: a bounded wait that never swallows the caller's cancellation."""

from __future__ import annotations

import asyncio

import pytest

from segengine.worker.tasks import within


async def test_a_finished_awaitable_gives_its_future() -> None:
    async def answer() -> int:
        return 42

    async def fails() -> None:
        raise ValueError("no")

    done = await within(answer(), 5)
    assert done is not None and done.result() == 42
    failed = await within(fails(), 5)
    assert failed is not None and isinstance(failed.exception(), ValueError)


async def test_one_that_does_not_finish_in_time_is_cancelled_and_gives_none() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(forever())
    assert await within(task, 0.05) is None
    await asyncio.sleep(0)
    assert started.is_set() and task.cancelled()


async def test_the_callers_cancellation_cancels_it_and_is_raised() -> None:
    inner = asyncio.ensure_future(asyncio.Event().wait())
    outer = asyncio.ensure_future(within(inner, 60))
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.sleep(0)
    assert inner.cancelled()
