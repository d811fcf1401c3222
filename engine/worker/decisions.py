"""The one door to customer state: event batches, due timers and re-evaluations take turns
writing (one at a time, under the state lock), and publish in the order they wrote."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..heap import after_batch
from ..metrics import Metrics
from ..pipeline import BatchProcessor, Prepared
from ..store import Store
from .hooks import Hooks
from .order import PublishOrder
from .retry import RetryPolicy

TURN = 50  # customers decided with no event per turn of the state lock: an event batch waits for one turn at most
FLOWING_S = 1.0  # events flow while an event batch was written this recently
T = TypeVar("T")
R = TypeVar("R")


class Decisions:
    def __init__(
        self,
        processor: BatchProcessor,
        store: Store,
        retry: RetryPolicy,
        metrics: Metrics,
        hooks: Hooks,
        background_share: float = 1.0,
    ) -> None:
        self.processor = processor
        self.store = store
        self.retry = retry
        self.metrics = metrics
        self.hooks = hooks
        self.lock = asyncio.Lock()  # one writer of state at a time
        self.order = PublishOrder()  # and publishes in the order they wrote
        # While events flow, decisions with no event (due timers, re-evaluations) take at most
        # this share of the time: they pause between turns, so that event batches go first.
        self.background_share = background_share
        self._event_written = float("-inf")  # when an event batch last wrote (monotonic s)
        self._background = asyncio.Lock()  # taken by one decision with no event at a time, with its pause
        self._background_at = float("-inf")  # the next may start then, while events flow (monotonic s)

    async def with_retry(self, step: Callable[[T], Awaitable[R]], arg: T) -> R:
        return await self.retry.run(step, arg, self.metrics)

    def state_written(self, stage: str, prepared: Prepared) -> None:
        if stage == "batch":
            self._event_written = time.monotonic()
        if self.hooks.state_written is not None:
            self.hooks.state_written(stage, prepared.stats)

    async def publish_in_turn(self, prepared: Prepared, ticket: int) -> None:
        """Publish when ``ticket``'s turn comes (refused after an earlier turn failed: see
        PublishOrder). Failed, refused or cancelled, these writes are not known published:
        the processor signs its next ones anew, so that they send these outboxes again."""
        try:
            async with self.order.turn(ticket):
                await self.with_retry(self.processor.publish, prepared)
        except BaseException:
            self.processor.signature.distrust()
            raise

    async def decide_in_turns(
        self, step: Callable[[list[T]], Awaitable[Prepared]], items: list[T], *, stage: str
    ) -> list[Prepared]:
        """Decisions with no event (due timers, a re-evaluation), ``TURN`` items at a time while
        events flow (else all at once): each turn is written under the state lock, then
        published in its turn and its outboxes dropped, as an event batch is. The lock is not
        held while the broker acknowledges (the next turn, or an event batch, goes on
        meanwhile); a write that comes between keeps such a customer due at once until its
        outbox is known published (segengine.writes.customer_write). Returns when every turn
        is published; raises the first failure."""
        prepared: list[Prepared] = []
        publishing: list[asyncio.Task[None]] = []
        start = 0
        try:
            while start < len(items):
                async with self._background:  # one such turn at a time, whichever loop it is from
                    flowing = time.monotonic() - self._event_written < FLOWING_S
                    if flowing and self.background_share < 1:
                        await asyncio.sleep(max(0.0, self._background_at - time.monotonic()))
                    size = TURN if flowing else len(items)  # with no event batch to wait, in one turn
                    async with self.lock:
                        started = time.monotonic()
                        since = self.order.epoch()
                        turn = await self.with_retry(step, items[start : start + size])
                        start += size
                        ticket = self.order.ticket(since)
                        # the next such turn no sooner than the share allows: the rest of the time is the events'
                        self._background_at = started + (time.monotonic() - started) / self.background_share
                self.state_written(stage, turn)
                after_batch()  # what the turn left alive is frozen out of collections (segengine.heap)
                prepared.append(turn)
                publishing.append(asyncio.create_task(self._publish_and_drop(turn, ticket)))
        finally:
            outcomes = await asyncio.gather(*publishing, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return prepared

    async def _publish_and_drop(self, prepared: Prepared, ticket: int) -> None:
        await self.publish_in_turn(prepared, ticket)
        await self.processor.outbox_published(prepared.stats.outboxes)
