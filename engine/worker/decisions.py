"""The one door to customer state: event batches, due timers and re-evaluations take turns
writing (one at a time, under the state lock), and publish in the order they wrote."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..metrics import Metrics
from ..pipeline import BatchProcessor, Prepared
from ..store import Store
from .hooks import Hooks
from .order import PublishOrder
from .retry import RetryPolicy

T = TypeVar("T")
R = TypeVar("R")


class Decisions:
    def __init__(
        self, processor: BatchProcessor, store: Store, retry: RetryPolicy, metrics: Metrics, hooks: Hooks
    ) -> None:
        self.processor = processor
        self.store = store
        self.retry = retry
        self.metrics = metrics
        self.hooks = hooks
        self.lock = asyncio.Lock()  # one writer of state at a time
        self.order = PublishOrder()  # and publishes in the order they wrote

    async def with_retry(self, step: Callable[[T], Awaitable[R]], arg: T) -> R:
        return await self.retry.run(step, arg, self.metrics)

    def state_written(self, stage: str, prepared: Prepared) -> None:
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

    async def decide_and_publish(self, step: Callable[[T], Awaitable[Prepared]], arg: T, *, stage: str) -> Prepared:
        """A decision with no event (due timers, a re-evaluation): written, published in its
        turn, its outboxes dropped, all under the state lock (no other write comes between)."""
        async with self.lock:
            since = self.order.epoch()
            prepared = await self.with_retry(step, arg)
            self.state_written(stage, prepared)
            await self.publish_in_turn(prepared, self.order.ticket(since))
            await self.store.outbox_published(prepared.stats.outboxes)
        return prepared
