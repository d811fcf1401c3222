"""Housekeeping beside the hot path: the consumer lag gauges, the population gauges, the
sweep that deletes erased customers a stopped worker left behind, and the registration of
the rules' texts (segengine.reasons)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer
from redis.exceptions import RedisError

from ..codec import load_offsets
from ..metrics import Metrics
from ..pipeline import BatchProcessor
from ..records import TopicPartition
from ..rules import RuleSet
from ..store import Loaded, Published, Store
from .tasks import pause

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0  # how often the consumer lag gauges are refreshed
POPULATION_INTERVAL_S = 5.0  # how often the population gauges are refreshed
ERASE_SWEEP_S = 5.0  # how often erased customers left behind by a stopped worker are looked for
REASONS_CHECK_S = 1.0  # how often the rules in force are checked for texts not registered yet


class LagGauges:
    """Consumer lag per owned partition: the high watermark (from the last fetch) minus the
    committed offset (what a new owner would start from), or minus the position before
    anything is committed."""

    def __init__(self, consumer: AIOKafkaConsumer, processor: BatchProcessor, metrics: Metrics) -> None:
        self.consumer = consumer
        self.processor = processor
        self.metrics = metrics

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            lags: dict[tuple[str, int], int] = {}
            for tp in self.consumer.assignment():
                try:
                    highwater = self.consumer.highwater(tp)
                    if highwater is None:
                        continue  # not fetched yet
                    done = self.processor.committed.get(TopicPartition(tp.topic, tp.partition))
                    if done is None:
                        done = await asyncio.wait_for(self.consumer.position(tp), 1)
                    lags[(tp.topic, tp.partition)] = max(0, highwater - done)
                except Exception as exc:  # revoked meanwhile, or no position yet: next round
                    log.debug("lag of %s unknown: %r", tp, exc)
            self.metrics.set_consumer_lag(lags)
            await pause(stop, LAG_INTERVAL_S)


class PopulationGauges:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.metrics.set_population(await self.store.population())
            except Exception as exc:  # a gauge refresh must never stop the worker
                log.debug("population refresh failed: %r", exc)
            await pause(stop, POPULATION_INTERVAL_S)


class EraseSweep:
    """Deletes erased customers whose erase is committed but whose hash is still there: the
    worker that wrote it stopped between its commit and its cleanup (segengine.store_redis)."""

    def __init__(self, processor: BatchProcessor, store: Store) -> None:
        self.processor = processor
        self.store = store

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await pause(stop, ERASE_SWEEP_S)
            if stop.is_set():
                break  # the clients are closing
            try:
                await self.sweep()
            except Exception as exc:  # tried again on the next round
                log.warning("erase sweep failed: %s", type(exc).__name__)  # never the message: it may name the customer
                log.debug("erase sweep failed", exc_info=True)

    async def sweep(self) -> None:
        done = [Published(cid, row.version) for cid, row in await self.store.erasing() if self._committed(row)]
        if done:
            await self.store.outbox_published(done)
            log.info("deleted %d erased customers left behind", len(done))

    def _committed(self, row: Loaded) -> bool:
        if row.blob is not None:
            return False  # a customer again (its write took it off the erasing set)
        if row.offsets is None:
            return row.version == 0  # the hash is gone already: only the set entry is left
        committed = self.processor.committed  # partitions this worker owns only
        return all(tp in committed and committed[tp] > offset for tp, offset in load_offsets(row.offsets).items())


class ReasonRegistration:
    """Registers the rule texts of the rules in force when the worker starts and after every
    rules switch, so that recent changes name them by code; until it succeeds (Redis out of
    reach: tried again at the next check) they hold the texts in full, as before."""

    def __init__(self, processor: BatchProcessor, store: Store) -> None:
        self.processor = processor
        self.store = store
        self.registered: RuleSet | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            rules = self.processor.rules
            if rules is not self.registered:
                try:
                    await self.processor.reasons.register(self.store, rules)
                    self.registered = rules
                except (RedisError, OSError) as exc:
                    log.warning("rule texts not registered yet: %s", type(exc).__name__)
            await pause(stop, REASONS_CHECK_S)
