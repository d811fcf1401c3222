"""An event batch from written state to committed offsets, in this order:

    1. prepare   state written with its outbox (under the state lock, with a publish ticket)
    2. publish   in the ticket's turn; returns when the broker acknowledged every record
    3. commit    the batch's offsets, for the partitions this worker still owns
    4. clean up  the outboxes of the batch's writes (in the background, one cleanup at a time)

A crash anywhere leaves the batch uncommitted and its outboxes in place: the records are
delivered again, recognised as applied, and their outboxes published again (same ids).
The rebalance listener is here too: a revoke waits for the batch in flight (steps 1-3).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, RebalanceInProgressError

from ..ledger import Ledger
from ..metrics import Metrics
from ..pipeline import BatchProcessor, BatchStats, Prepared
from ..records import Record, TopicPartition
from ..store import Published, Store
from .decisions import Decisions

log = logging.getLogger(__name__)

REVOKE_WAIT_S = 30.0  # longest a rebalance waits for the batch in flight to be published and committed
OnBatch = Callable[[BatchStats], Awaitable[None] | None]


class Checkpoint:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        processor: BatchProcessor,
        store: Store,
        decisions: Decisions,
        metrics: Metrics,
        on_batch: OnBatch | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.consumer = consumer
        self.ledger = ledger  # the offsets about to be committed, recorded in Redis first (segengine.ledger)
        self.lost: BaseException | None = None  # Redis lost data: no batch may write
        self.processor = processor
        self.store = store
        self.decisions = decisions
        self.metrics = metrics
        self.on_batch = on_batch
        self._in_flight = 0  # event batches prepared and not yet committed
        self.idle = asyncio.Event()  # no event batch in flight (a rebalance waits for it)
        self.idle.set()
        self._cleanup: asyncio.Task[None] | None = None

    async def prepare(self, records: Iterable[Record]) -> tuple[Prepared, int]:
        """Step 1: the batch's state written; returns it with its publish ticket."""
        if self.lost is not None:
            raise self.lost
        self._in_flight += 1
        self.idle.clear()
        decisions = self.decisions
        try:
            async with decisions.lock:
                since = decisions.order.epoch()
                prepared = await decisions.with_retry(self.processor.prepare, records)
                ticket = decisions.order.ticket(since)
        except BaseException:
            self._batch_done()
            raise
        decisions.state_written("batch", prepared)
        return prepared, ticket

    async def finish(
        self, prepared: Prepared, started: float, ticket: int, after: asyncio.Future[None] | None = None
    ) -> None:
        """Steps 2-4. ``after``: the finishing of the batch before this one, which commits first
        (this one's offsets cover its records: if it failed, this one fails too)."""
        stats = prepared.stats
        try:
            await self.decisions.publish_in_turn(prepared, ticket)
            if after is not None:
                await asyncio.shield(after)
            offsets = {KafkaTopicPartition(*tp): offset for tp, offset in stats.next_offsets.items()}
            for tp, offset in (await self.commit(offsets)).items():
                self.processor.committed[TopicPartition(tp.topic, tp.partition)] = offset
            # Published and acknowledged: the outboxes are no longer needed, committed or not
            # (records a rebalance took away are redelivered, recognised as applied, and cause nothing new).
            await self._clean_up(stats.outboxes)
        finally:
            self._batch_done()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(stats.records)
        if self.on_batch is not None:
            maybe = self.on_batch(stats)
            if maybe is not None:
                await maybe

    async def commit(self, offsets: dict[KafkaTopicPartition, int]) -> dict[KafkaTopicPartition, int]:
        """Commit what this worker still owns, and return what was committed. Partitions a
        rebalance took away are not: their new owner reads those records again, which
        changes nothing it already applied. Never fatal."""
        owned = self.consumer.assignment()
        mine = {tp: o for tp, o in offsets.items() if tp in owned}
        if len(mine) < len(offsets):
            self.metrics.revoked_commits.inc()
        if not mine:
            return {}
        if self.ledger is not None:  # before the commit: Redis must never be behind it
            await self.decisions.with_retry(
                self.ledger.before_commit, {TopicPartition(*tp): o for tp, o in mine.items()}
            )
        try:
            await self.decisions.with_retry(self.consumer.commit, mine)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            self.metrics.revoked_commits.inc()
            log.warning(
                "commit refused after a rebalance (%s); the records will be redelivered to their owner",
                type(exc).__name__,
            )
            return {}
        if self.ledger is not None:
            await self.ledger.after_commit(TopicPartition(tp.topic, tp.partition) for tp in mine)
        return mine

    async def close(self) -> None:
        """The last cleanup (an erase's deletion) before the clients close."""
        if self._cleanup is not None:
            await self._cleanup

    def _batch_done(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self.idle.set()

    async def _clean_up(self, written: list[Published]) -> None:
        if self._cleanup is not None:
            await self._cleanup
            self._cleanup = None
        if written:
            self._cleanup = asyncio.create_task(self._clean_up_now(written))

    async def _clean_up_now(self, written: list[Published]) -> None:
        try:
            await self.processor.outbox_published(written)
        except Exception as exc:  # an outbox left behind is pruned on the customer's next event
            log.debug("outbox cleanup failed: %r", exc)


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, checkpoint: Checkpoint, on_lost: Callable[[BaseException], None] | None = None) -> None:
        self.checkpoint = checkpoint
        self.on_lost = on_lost

    async def on_partitions_revoked(self, revoked: set[KafkaTopicPartition]) -> None:
        """Before the partitions go: let the batch in flight publish and commit (the group
        waits for this), so that their new owner starts after it; a batch that takes too
        long is left to be redelivered to the new owner (harmless: see segengine.pipeline)."""
        processor = self.checkpoint.processor
        try:
            await asyncio.wait_for(self.checkpoint.idle.wait(), REVOKE_WAIT_S)
        except TimeoutError:
            log.warning(
                "a batch was still in flight after %.0f s at a rebalance; its records will be redelivered",
                REVOKE_WAIT_S,
            )
        for tp in revoked:
            processor.committed.pop(TopicPartition(tp.topic, tp.partition), None)
            processor.read.pop(TopicPartition(tp.topic, tp.partition), None)
        processor.cache.clear()  # mostly their owner's customers now (a state held is checked on use anyway)
        log.info("revoked %d partitions", len(revoked))

    async def on_partitions_assigned(self, assigned: set[KafkaTopicPartition]) -> None:
        checkpoint = self.checkpoint
        known: dict[TopicPartition, int] = {}
        for tp in assigned:
            try:
                committed = await checkpoint.consumer.committed(tp)
            except KafkaError as exc:  # known again after the next commit; until then the lag gauge uses the position
                log.warning("committed offset of %s unknown: %s", tp, type(exc).__name__)
                continue
            known[TopicPartition(tp.topic, tp.partition)] = committed or 0
        checkpoint.processor.committed.update(known)
        log.info("assigned %d partitions", len(assigned))
        if checkpoint.ledger is not None:
            try:
                verdict = await checkpoint.ledger.check(known)
            except Exception as exc:  # Redis out of reach: the outage watch deals with it
                log.warning("commit ledger not checked: %s", type(exc).__name__)
                return
            if verdict.lost is not None:  # before any batch of these partitions is read
                checkpoint.lost = verdict.lost
                if self.on_lost is not None:
                    self.on_lost(verdict.lost)
            for tp, start in verdict.replay_from.items():  # rebuilt: these partitions start over
                checkpoint.consumer.seek(KafkaTopicPartition(tp.topic, tp.partition), start)
                checkpoint.processor.committed[tp] = start
                log.warning("replaying %s:%d from offset %d into the rebuilt Redis", tp.topic, tp.partition, start)
