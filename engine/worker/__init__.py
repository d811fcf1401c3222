"""The worker: a Kafka consumer-group member that feeds batches to the pipeline, and the
background loops beside it. This module only wires the parts:

    batches      segengine.worker.checkpoint   prepare -> publish -> commit -> clean up, in order
    due timers   segengine.worker.due          time alone moves customers
    rules        segengine.worker.reload       hot reload, then a re-evaluation (segengine.worker.reevaluate)
    population   segengine.worker.population   quantile samples and re-scores
    maintenance  segengine.worker.maintenance  lag and population gauges, the erase sweep
    outage       segengine.worker.outage       stop when Redis or the broker stays out of reach

All of them write state through one door (segengine.worker.decisions): one writer at a time,
publishing in the order they wrote. The HTTP API sees the worker through a read-only view
(segengine.worker.view).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import NATIVE
from ..api import ApiServer
from ..clock import make_clock
from ..errors import ConfigError
from ..events import INPUT_TOPICS
from ..heap import after_batch
from ..kafka import KafkaSink, make_consumer, make_producer
from ..ledger import Ledger, refuse_eviction
from ..metrics import Metrics
from ..pipeline import BatchProcessor, BatchStats
from ..records import Record
from ..rules import RuleSet, load_rules
from ..settings import Settings
from ..store_redis import RedisStore, connect
from ..topics import load_topics
from . import hooks as _hooks
from .checkpoint import Checkpoint, OnBatch, Rebalance
from .decisions import Decisions
from .due import DueTimers
from .hooks import Hooks
from .maintenance import EraseSweep, LagGauges, PopulationGauges, ReasonRegistration
from .outage import DependencyWatch, LedgerWatch, kafka_probe, redis_address, redis_probe
from .ownership import Ownership
from .parts import Parts
from .population import PopulationSample
from .reevaluate import Reevaluation
from .reload import RulesReload, undeclared_topics
from .retry import RetryPolicy
from .tasks import stop_tasks, within
from .view import Health

log = logging.getLogger(__name__)

IDLE_POLL_MS = 100  # how long the batch loop waits for a first record before it looks around
# getmany() waits for an assignment without a bound (aiokafka): a worker whose broker went away
# during a group join would wait there forever and never see that it is stopping (an outage
# past SEGENGINE_DEPENDENCY_TIMEOUT_S). It is given its timeout and this much more.
FETCH_SLACK_S = 1.0
CLOSE_WAIT_S = 10.0  # longest wait for one client to close on the way out (see Worker._close)
MAX_FINISHING = 2  # event batches published and committed while the next is prepared, at most

__all__ = ["Worker"]


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        on_batch: OnBatch | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        if not settings.kafka_bootstrap or not settings.redis_url:
            raise ConfigError("the worker needs kafka_bootstrap and redis_url (or run it through the embedded stack)")
        self.settings = settings
        self.metrics = metrics or Metrics()
        rules = load_rules(settings.rules_file)
        self.metrics.rules_info.info({"version": rules.version})
        declared = load_topics(settings.topics_file)
        if undeclared := undeclared_topics(rules, {t.name for t in declared}):
            raise ConfigError(
                f"the rules send actions to topics not declared in {settings.topics_file}: {', '.join(undeclared)}"
            )
        self.input_partition_count = max(t.partitions for t in declared if t.name in INPUT_TOPICS)
        self.redis = connect(settings.redis_url)
        self.store = RedisStore(self.redis, self.metrics, buckets=settings.redis_buckets)
        self.producer = make_producer(settings)
        self.consumer = make_consumer(settings)
        self.stopping = asyncio.Event()
        self.processor = BatchProcessor(
            settings, rules, self.store, KafkaSink(self.producer), make_clock(settings.clock), self.metrics
        )
        self.ownership = Ownership(self.consumer, self.processor)
        self.processor.decision_limit = self.ownership.decision_limit
        self.decisions = Decisions(
            self.processor,
            self.store,
            RetryPolicy(),
            self.metrics,
            hooks or _hooks.INSTALLED,
            settings.background_share,
        )
        self.ledger = Ledger(self.redis)
        self.checkpoint = Checkpoint(
            self.consumer,
            self.processor,
            self.store,
            self.decisions,
            self.metrics,
            on_batch=on_batch,
            ledger=self.ledger,
        )
        parts = Parts(settings, self.processor, self.store, self.decisions, self.ownership, self.metrics)
        self.reevaluation = Reevaluation(parts, self.stopping)
        self.timers = DueTimers(parts)
        self.reload = RulesReload(parts, self.reevaluation, {t.name for t in declared})
        self.population = PopulationSample(parts, self.reevaluation)
        self._probes = {
            f"Redis at {redis_address(settings.redis_url)}": redis_probe(self.redis),
            f"the Kafka broker at {settings.kafka_bootstrap}": kafka_probe(self.producer),
        }
        self.failure: BaseException | None = None  # why the worker stopped on its own

    # -- the read-only view the API sees (segengine.worker.view) ---------------------------------

    @property
    def rules(self) -> RuleSet:
        return self.processor.rules

    def now(self) -> int:
        return self.processor.clock.now()

    async def health(self) -> Health:
        """Redis answers a PING, the broker a metadata request, and the group gave us partitions."""
        redis, kafka = await asyncio.gather(*(probe() for probe in self._probes.values()))
        return Health(redis is None, kafka is None, len(self.consumer.assignment()))

    # -- for callers that watch the worker (the demo, tests) ----------------------------------

    @property
    def idle(self) -> asyncio.Event:
        """Set while no event batch is in flight."""
        return self.checkpoint.idle

    @property
    def on_timers(self) -> Callable[[BatchStats], None] | None:
        return self.timers.on_timers

    @on_timers.setter
    def on_timers(self, callback: Callable[[BatchStats], None] | None) -> None:
        self.timers.on_timers = callback

    async def rescore(self) -> int:
        """Re-score every customer this worker owns against the current population sample:
        population-ranked scores (RFM quintiles) otherwise move only when an event or a
        timer re-evaluates the customer. Changes carry ``cause.kind = timer``."""
        return await self.reevaluation.run(self.processor.rules, rescore=True)

    async def renew_population_sample(self) -> None:
        await self.population.renew()

    # -- running -------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()

    def _lost(self, error: BaseException) -> None:
        """Stop on ``error``, which ``run`` raises once everything is closed (the caller says it)."""
        if self.failure is None:
            self.failure = error
        self.stopping.set()

    async def run(self) -> None:
        """Consume until ``stop()``; raises (without committing) on a non-retriable error.
        With ``http_port`` set, the HTTP API (segengine.api) is up for as long as this runs."""
        settings = self.settings
        log.info("the pure core: %s", NATIVE.reason)
        api = None
        if settings.http_socket_fd is not None:
            api = ApiServer(self, settings.http_host, 0, socket.socket(fileno=settings.http_socket_fd))
        elif settings.http_port:
            api = ApiServer(self, settings.http_host, settings.http_port)
        if api is not None:
            try:
                await api.start()
            except BaseException:  # the port taken, say: the clients built for this run are closed
                await self._close()
                raise
        sweep = asyncio.create_task(EraseSweep(self.processor, self.store).run(self.stopping))
        try:
            await self._consume()
        finally:
            self.stopping.set()
            await stop_tasks([sweep])
            if api is not None:
                await api.stop()
        if self.failure is not None:
            raise self.failure

    async def _check_layout(self) -> None:
        """Data of an older layout, or a cluster node named alone, stop the worker here (ConfigError);
        a Redis out of reach is the outage watch's to judge (the layout is read on first use)."""
        try:
            await self.store.layout()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("Redis's key layout not read yet: %s", type(exc).__name__)

    async def _consume(self) -> None:
        settings, stop = self.settings, self.stopping
        await self.producer.start()
        try:
            await refuse_eviction(self.redis)
            await self._check_layout()
            self.consumer.subscribe(list(INPUT_TOPICS), listener=Rebalance(self.checkpoint, self._lost))
            await self.consumer.start()
            loops: list[Coroutine[Any, Any, None]] = [
                PopulationGauges(self.store, self.metrics).run(stop),
                ReasonRegistration(self.processor, self.store).run(stop),
                LagGauges(self.consumer, self.processor, self.metrics).run(stop),
                DependencyWatch(settings, self._probes, self._lost).run(stop),
                LedgerWatch(self.ledger, self.processor.committed, self._lost).run(stop),
            ]
            if settings.rules_reload_s:
                loops.append(self.reload.run(stop))
            if settings.timers and not self.rules.time_plan.empty:
                loops.append(self.timers.run(stop))
            if settings.quantiles_refresh_s:
                loops.append(self.population.run(stop))
            background: list[asyncio.Task[Any]] = [asyncio.create_task(loop) for loop in loops]
            try:
                await self._batches()
            finally:
                stop.set()  # background loops end at their next pause
                background += self.reevaluation.tasks
                await stop_tasks(background)  # stopped before the clients close
        finally:
            await self._close()

    async def _batches(self) -> None:
        """Prepare batch N+1 (CPU and Redis) while the batches before it are published and
        committed, up to MAX_FINISHING of them: the loop does not wait for a commit round trip
        before it reads on. Publishes and commits stay strictly in batch order."""
        finishing: deque[asyncio.Task[None]] = deque()
        try:
            while not self.stopping.is_set():
                records = await self._next_batch()
                while finishing and finishing[0].done():
                    await finishing.popleft()  # raises what failed it
                if not records:
                    continue
                started = time.perf_counter()
                prepared, ticket = await self.checkpoint.prepare(records)
                after_batch()  # what the batch left alive is frozen out of collections (segengine.heap)
                while len(finishing) >= MAX_FINISHING:
                    await finishing.popleft()
                after = finishing[-1] if finishing else None
                finishing.append(asyncio.create_task(self.checkpoint.finish(prepared, started, ticket, after)))
        finally:
            outcomes = await asyncio.gather(*finishing, return_exceptions=True)
            await self.checkpoint.close()
        for outcome in outcomes:  # on the way out without an error of its own: the first batch that failed
            if isinstance(outcome, BaseException):
                raise outcome

    async def _next_batch(self) -> list[Record]:
        """Up to batch_max_records: once the first records are in, waiting at most
        batch_timeout_ms more for the batch to fill (the fetcher buffers little per partition,
        so one getmany() alone gives small batches); nothing after IDLE_POLL_MS with none."""
        settings = self.settings
        records: list[Record] = []
        deadline: float | None = None  # set when the first records are in
        while len(records) < settings.batch_max_records:
            timeout_ms = IDLE_POLL_MS if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            fetch = await within(
                self.consumer.getmany(timeout_ms=timeout_ms, max_records=settings.batch_max_records - len(records)),
                timeout_ms / 1000 + FETCH_SLACK_S,
            )
            if fetch is None:  # no assignment to fetch for (see FETCH_SLACK_S): the loop looks at stopping
                break
            fetched = fetch.result()
            for recs in fetched.values():
                records.extend(recs)
            if not records or timeout_ms == 0 or self.stopping.is_set():
                break
            if deadline is None:
                deadline = time.monotonic() + settings.batch_timeout_ms / 1000
        return records

    async def _close(self) -> None:
        """Each client closed in turn, each within CLOSE_WAIT_S: a consumer whose broker went away
        during a group join waits in its stop() for a join that never ends."""
        clients = (("consumer", self.consumer.stop), ("producer", self.producer.stop), ("redis", self.redis.aclose))
        for name, close in clients:
            closing = await within(close(), CLOSE_WAIT_S)
            if closing is None:
                log.warning("the %s client did not close within %g s; left behind", name, CLOSE_WAIT_S)
            elif closing.cancelled():  # a client's own task cancelled under it (its broker gone)
                log.debug("close cancelled inside the client")
            elif (exc := closing.exception()) is not None:  # best effort on the way out
                log.debug("close failed: %r", exc)
