"""Small helpers every background loop of the worker uses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when the worker is stopping."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def within(awaitable: Awaitable[T], seconds: float) -> asyncio.Future[T] | None:
    """Await ``awaitable`` for at most ``seconds``: its future once done (a result, an
    exception, or cancelled inside), or None when it did not finish in time (it is cancelled
    then). A cancellation of the caller cancels it too and is raised: never swallowed, as
    asyncio.wait_for can on Python 3.11 when it meets a result."""
    future = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((future,), timeout=seconds)
    except asyncio.CancelledError:
        future.cancel()
        raise
    if not done:
        future.cancel()
        return None
    return future


async def stop_tasks(tasks: Sequence[asyncio.Task[Any]], grace_s: float = 5.0) -> None:
    """Let background loops end on their own, then cancel what is left. A client library
    can swallow a cancellation (the task stays "cancelling" and sleeps on), so never wait
    for a task without a bound."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace_s)
    for task in pending:
        task.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=grace_s)
        for task in stuck:
            log.warning("background task %s did not stop; leaving it", task.get_coro())
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            exc = task.exception()  # its message may name a customer: the type above debug, the rest at debug
            log.warning("background task ended with %s", type(exc).__name__)
            log.debug("background task ended with %r", exc)
