"""The worker: a Kafka consumer-group member that feeds batches to the pipeline.

The hot path reads batches straight from aiokafka (``getmany``), not through faust's
per-event stream machinery, so that validation, state updates and publishing are done
a batch at a time. Offsets are committed by hand, only after a batch's state writes
and output records are durable. The input topics are co-partitioned and assigned with
the range assignor, so one worker owns all of a customer's events on every topic.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, RebalanceInProgressError
from aiokafka.partitioner import murmur2
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .api import ApiServer
from .clock import EventClock, make_clock, wall_ms
from .events import INPUT_TOPICS
from .metrics import Metrics
from .pipeline import BatchProcessor, BatchStats, ConcurrentWriteError, Prepared
from .rules import RuleSet, check_files, load_rules, rule_files
from .settings import Settings
from .state import CustomerState, Features
from .store_redis import Loaded, RedisStore, connect
from .topics import load_topics

log = logging.getLogger(__name__)

RETRIABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConcurrentWriteError,
    asyncio.TimeoutError,
)
MAX_ATTEMPTS = 8
LAG_INTERVAL_S = 5.0  # how often the consumer lag gauges are refreshed
ERASE_SWEEP_S = 5.0  # how often erased customers left behind by a stopped worker are looked for
REVOKE_WAIT_S = 30.0  # longest a rebalance waits for the batch in flight to be published and committed
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry a whole batch after a retriable error; the batch is idempotent."""

    attempts: int = MAX_ATTEMPTS
    first_delay_s: float = 0.1
    max_delay_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay_s, self.first_delay_s * 2**attempt)

    @staticmethod
    def retriable(exc: BaseException) -> bool:
        if isinstance(exc, KafkaError):
            return bool(getattr(exc, "retriable", False))
        return isinstance(exc, RETRIABLE)


class KafkaSink:
    """Publishes output records and returns once the broker acknowledged all of them.

    Records are grouped into one producer batch per topic-partition (the partition
    chosen from the key exactly as Kafka's default partitioner does), which costs far
    less per record than ``send()`` one by one. Order per partition is kept.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._partitions: dict[str, list[int]] = {}
        self._key_partition: dict[tuple[str, bytes], int] = {}

    async def _partition(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        if key is None:
            return partitions[0]
        cached = self._key_partition.get((topic, key))
        if cached is None:
            if len(self._key_partition) > 500_000:
                self._key_partition.clear()
            cached = self._key_partition[(topic, key)] = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        return cached

    async def publish(self, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
        grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        for topic, key, value in records:
            grouped.setdefault((topic, await self._partition(topic, key)), []).append((key, value))
        futures = []
        for (topic, partition), items in grouped.items():
            batch = self.producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"a record for {topic} is larger than the producer's max batch size")
            if batch.record_count():
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)


def _thin(sorted_values: list[float], keep: int) -> list[float]:
    """At most ``keep`` evenly spaced values of a sorted list (ranks stay within 1/keep)."""
    if len(sorted_values) <= keep:
        return sorted_values
    step = len(sorted_values) / keep
    return [sorted_values[int(i * step)] for i in range(keep)]


class PublishOrder:
    """Output is published in the order state was written, whoever wrote it (an event batch,
    the due loop, a re-evaluation): each takes a ticket while it holds the state lock, and
    publishes when its turn comes. So, per customer, records appear in decision order, and
    a timer's change never overtakes the event change decided before it."""

    def __init__(self) -> None:
        self._issued = 0
        self._next = 0  # the ticket whose turn it is
        self._abandoned: set[int] = set()
        self._turn = asyncio.Condition()

    def ticket(self) -> int:
        ticket = self._issued
        self._issued += 1
        return ticket

    @asynccontextmanager
    async def turn(self, ticket: int) -> AsyncIterator[None]:
        try:
            async with self._turn:
                await self._turn.wait_for(lambda: self._next == ticket)
        except BaseException:  # cancelled while waiting: the later tickets must not wait for this one
            self._abandoned.add(ticket)
            await self._advance(ticket)
            raise
        try:
            yield
        finally:
            await self._advance(ticket)

    async def _advance(self, ticket: int) -> None:
        async with self._turn:
            if self._next == ticket:
                self._next += 1
                while self._next in self._abandoned:
                    self._abandoned.discard(self._next)
                    self._next += 1
                self._turn.notify_all()


def rules_fingerprint(path: Path) -> bytes:
    """The rules' bytes (every pack), to notice a change cheaply."""
    return b"\x00".join(f.read_bytes() for f in rule_files(path))


async def _stop_tasks(tasks: list[asyncio.Task[None]], grace_s: float = 5.0) -> None:
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


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before the partitions go: let the batch in flight publish and commit (the group
        waits for this), so that their new owner starts after it; a batch that takes too
        long is left to be redelivered to the new owner (harmless: see engine.pipeline)."""
        worker = self.worker
        try:
            await asyncio.wait_for(worker.idle.wait(), REVOKE_WAIT_S)
        except TimeoutError:
            log.warning(
                "a batch was still in flight after %.0f s at a rebalance; its records will be redelivered",
                REVOKE_WAIT_S,
            )
        for tp in revoked:
            worker.processor.committed.pop(f"{tp.topic}:{tp.partition}", None)
            worker.processor.read.pop((tp.topic, tp.partition), None)
        log.info("revoked %d partitions", len(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            try:
                committed = await self.worker.consumer.committed(tp)
            except KafkaError as exc:  # known again after the next commit; until then the lag gauge uses the position
                log.warning("committed offset of %s unknown: %s", tp, type(exc).__name__)
                continue
            self.worker.processor.committed[f"{tp.topic}:{tp.partition}"] = committed or 0
        log.info("assigned %d partitions", len(assigned))


OnBatch = Callable[[BatchStats], Awaitable[None] | None]


class Worker:
    def __init__(self, settings: Settings, *, metrics: Metrics | None = None, on_batch: OnBatch | None = None) -> None:
        if not settings.kafka_bootstrap or not settings.redis_url:
            raise ValueError("the worker needs kafka_bootstrap and redis_url (or run it through the embedded stack)")
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.on_batch = on_batch
        self.rules = load_rules(settings.rules_file)
        self.metrics.rules_info.info({"version": self.rules.version})
        self.redis = connect(settings.redis_url)
        self.store = RedisStore(self.redis, self.metrics)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            linger_ms=2,
            max_batch_size=1 << 20,
            max_request_size=4 << 20,
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=4 << 20,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            fetch_max_bytes=64 << 20,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            rebalance_timeout_ms=settings.rebalance_timeout_ms,
        )
        self.processor = BatchProcessor(
            settings, self.rules, self.store, KafkaSink(self.producer), make_clock(settings.clock), self.metrics,
            decision_limit=self.decision_limit,
        )  # fmt: skip
        declared = load_topics(settings.topics_file)
        self.input_partition_count = max(t.partitions for t in declared if t.name in INPUT_TOPICS)
        self._topics = frozenset(t.name for t in declared)
        if undeclared := self._undeclared(self.rules):
            raise ValueError(
                f"the rules send actions to topics not declared in {settings.topics_file}: {', '.join(undeclared)}"
            )
        self.retry = RetryPolicy()
        self.stopping = asyncio.Event()
        self._outbox_task: asyncio.Task[None] | None = None
        self._reevaluation: asyncio.Task[int] | None = None
        self._rescoring: asyncio.Task[int] | None = None  # re-score after the population sample moved
        self.on_timers: Callable[[BatchStats], None] | None = None
        # Batches, timers and re-evaluations take turns: one writes state at a time, and they
        # publish in the order they wrote.
        self._state_lock = asyncio.Lock()
        self._order = PublishOrder()
        self._in_flight = 0  # event batches prepared and not yet committed
        self.idle = asyncio.Event()  # no event batch in flight (a rebalance waits for it)
        self.idle.set()
        self._rules_text = rules_fingerprint(settings.rules_file)

    async def run(self) -> None:
        """Consume until ``stop()``; raises (without committing) on a non-retriable error.
        With ``http_port`` set, the HTTP API (engine.api) is up for as long as this runs."""
        api = ApiServer(self, self.settings.http_host, self.settings.http_port) if self.settings.http_port else None
        if api is not None:
            await api.start()
        sweep = asyncio.create_task(self._sweep_erasures())
        try:
            await self._consume()
        finally:
            self.stopping.set()
            await _stop_tasks([sweep])
            if api is not None:
                await api.stop()

    async def _consume(self) -> None:
        await self.producer.start()
        try:
            self.consumer.subscribe(list(INPUT_TOPICS), listener=_Rebalance(self))
            await self.consumer.start()
            background = [asyncio.create_task(self._refresh_population()), asyncio.create_task(self._watch_lag())]
            if self.settings.rules_reload_s:
                background.append(asyncio.create_task(self._watch_rules()))
            if self.settings.timers and not self.rules.time_plan.empty:
                background.append(asyncio.create_task(self._timer_loop()))
            if self.settings.quantiles_refresh_s:
                background.append(asyncio.create_task(self._refresh_quantiles()))
            try:
                await self._loop()
            finally:
                self.stopping.set()  # background loops end at their next pause
                background += [t for t in (self._reevaluation, self._rescoring) if t is not None]
                await _stop_tasks(background)  # stopped before the clients close
        finally:
            await self._close()

    def stop(self) -> None:
        self.stopping.set()

    def _undeclared(self, rules: RuleSet) -> list[str]:
        """Action topics that topics/topics.yaml does not declare (nothing would create them)."""
        return sorted({a.topic for a in rules.actions} - self._topics)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker is stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _loop(self) -> None:
        """Prepare batch N+1 (CPU and Redis) while batch N is published and committed.
        Publishes and commits stay strictly in batch order."""
        finishing: asyncio.Task[None] | None = None
        try:
            while not self.stopping.is_set():
                records = await self._next_batch()
                if not records:
                    if finishing is not None and finishing.done():
                        await finishing
                        finishing = None
                    continue
                started = time.perf_counter()
                self._in_flight += 1
                self.idle.clear()
                try:
                    async with self._state_lock:
                        prepared = await self._with_retry(self.processor.prepare, records)
                        ticket = self._order.ticket()
                except BaseException:
                    self._batch_done()
                    raise
                if self.settings.fault == "kill_after_save" and prepared.stats.applied:
                    os.kill(os.getpid(), signal.SIGKILL)  # state written, nothing published or committed
                if finishing is not None:
                    await finishing
                finishing = asyncio.create_task(self._finish(prepared, started, ticket))
        finally:
            if finishing is not None:
                await finishing
            if self._outbox_task is not None:  # the last cleanup (an erase's deletion) before the clients close
                await self._outbox_task

    def _batch_done(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self.idle.set()

    async def _finish(self, prepared: Prepared, started: float, ticket: int) -> None:
        try:
            async with self._order.turn(ticket):
                await self._with_retry(self.processor.publish, prepared)
            stats = prepared.stats
            for tp, offset in (
                await self._commit({TopicPartition(t, p): o for (t, p), o in stats.next_offsets.items()})
            ).items():
                self.processor.committed[f"{tp.topic}:{tp.partition}"] = offset
            # Published and acknowledged: the outboxes are no longer needed, committed or not
            # (records a rebalance took away are redelivered, recognised as applied, and cause nothing new).
            await self._drop_outboxes(stats.outboxes)
        finally:
            self._batch_done()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(stats.records)
        if self.on_batch is not None:
            maybe = self.on_batch(stats)
            if maybe is not None:
                await maybe

    async def _commit(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Commit what this worker still owns, and return what was committed. Partitions a
        rebalance took away are not: their new owner reads those records again, which
        changes nothing it already applied. Never fatal."""
        owned = self.consumer.assignment()
        mine = {tp: o for tp, o in offsets.items() if tp in owned}
        if len(mine) < len(offsets):
            self.metrics.revoked_commits.inc()
        if not mine:
            return {}
        try:
            await self._with_retry(self.consumer.commit, mine)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            self.metrics.revoked_commits.inc()
            log.warning(
                "commit refused after a rebalance (%s); the records will be redelivered to their owner",
                type(exc).__name__,
            )
            return {}
        return mine

    async def _next_batch(self) -> list:  # type: ignore[type-arg]
        """Up to batch_max_records, waiting at most batch_timeout_ms for the batch to fill:
        the fetcher buffers little per partition, so one getmany() alone gives small batches."""
        settings = self.settings
        deadline = time.monotonic() + settings.batch_timeout_ms / 1000
        records: list = []  # type: ignore[type-arg]
        while len(records) < settings.batch_max_records:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            fetched = await self.consumer.getmany(
                timeout_ms=remaining_ms, max_records=settings.batch_max_records - len(records)
            )
            for recs in fetched.values():
                records.extend(recs)
            if remaining_ms == 0 or self.stopping.is_set():
                break
        return records

    async def _drop_outboxes(self, written: list[tuple[str, int]]) -> None:
        """Committed: their outboxes are no longer needed. Done in the background; one at a time."""
        if self._outbox_task is not None:
            await self._outbox_task
            self._outbox_task = None
        if written:
            self._outbox_task = asyncio.create_task(self._drop_outboxes_now(written))

    async def _drop_outboxes_now(self, written: list[tuple[str, int]]) -> None:
        try:
            await self.store.outbox_published(written)
        except Exception as exc:
            log.debug("outbox cleanup failed: %r", exc)

    async def _with_retry(self, step: Callable[[T], Awaitable[R]], arg: T) -> R:
        for attempt in range(self.retry.attempts):
            try:
                return await step(arg)
            except Exception as exc:
                if not self.retry.retriable(exc) or attempt == self.retry.attempts - 1:
                    raise
                self.metrics.batch_retries.inc()  # Redis errors are counted by the store, per call
                delay = self.retry.delay(attempt)
                log.warning("batch step failed (%s), retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _owned_partitions(self) -> list[int]:
        topic = next(iter(INPUT_TOPICS))
        return sorted(tp.partition for tp in self.consumer.assignment() if tp.topic == topic)

    async def _timer_loop(self) -> None:
        """Time moves customers: take the due customers of the partitions this worker owns,
        re-evaluate them at their due time, reschedule them (see engine.timers)."""
        interval = self.settings.timer_interval_ms / 1000
        live = self.settings.clock == "wall"
        while not self.stopping.is_set():
            try:
                fired = await self._fire_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("timer step failed: %s", type(exc).__name__)
                log.debug("timer step failed", exc_info=True)
                fired = 0
            if not fired:
                await self._pause(interval)
            elif not live:
                await asyncio.sleep(0)

    @property
    def time_known(self) -> bool:
        """False in event time until a record was read: "now" is unknown (never the wall clock)."""
        clock = self.processor.clock
        return not isinstance(clock, EventClock) or clock.watermark is not None

    def decision_limit(self, partition: int) -> int | None:
        """The latest time at which a customer of this input partition may be decided with no
        event at hand (its due timers, a re-evaluation); None: not yet.

        Live, that is now. In event time it is the watermark, but no further than what this
        partition has reached on every input topic where records remain to be read: a
        customer is never decided ahead of its own records still waiting in a lagging
        partition (a replay stays equal to a fold of each customer's events in order)."""
        clock = self.processor.clock
        if not isinstance(clock, EventClock):
            return clock.now()
        if clock.watermark is None:
            return None  # event time with no event seen yet (say, just restarted): nothing is known to be due
        limit = clock.watermark
        assignment = self.consumer.assignment()
        for topic in INPUT_TOPICS:
            tp = TopicPartition(topic, partition)
            if tp not in assignment:
                continue
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                return None  # not fetched yet: how far it lags is unknown
            read = self.processor.read.get((topic, partition), self.processor.committed.get(f"{topic}:{partition}", 0))
            if read < highwater:  # records remain: not past what this partition has reached
                reached = clock.partitions.get((topic, partition))
                if reached is None:
                    return None
                limit = min(limit, reached)
        return limit

    async def _decide_and_publish(
        self, step: Callable[[T], Awaitable[Prepared]], arg: T, *, fault: str | None = None
    ) -> Prepared:
        """A decision with no event (due timers, a re-evaluation): written, published in its
        turn, its outboxes dropped, all under the state lock. An event batch folding one of
        these customers meanwhile would take the in-flight outbox for one a crash left
        behind, and send it a second time."""
        async with self._state_lock:
            prepared = await self._with_retry(step, arg)
            if fault is not None and self.settings.fault == fault and prepared.stats.changes:
                os.kill(os.getpid(), signal.SIGKILL)  # the decisions written, nothing published
            async with self._order.turn(self._order.ticket()):
                await self._with_retry(self.processor.publish, prepared)
            await self.store.outbox_published(prepared.stats.outboxes)
        return prepared

    async def _fire_due(self) -> int:
        fired = 0
        partitions = self._owned_partitions()
        backlog_until = self.processor.clock.now()
        for partition in partitions:
            until = self.decision_limit(partition)
            if until is None:
                continue
            due = await self.store.due(partition, until, self.settings.timer_batch)
            if not due:
                continue
            prepared = await self._decide_and_publish(
                functools.partial(self.processor.fire_timers, partition=partition), due, fault="kill_after_timer_save"
            )
            fired += len(due)
            self.metrics.timers_fired.inc(len(due))
            if self.settings.clock == "wall":
                wall = wall_ms()
                for _, at in due:
                    self.metrics.timer_lag.observe(max(0, wall - at) / 1000)
            if self.on_timers is not None:
                self.on_timers(prepared.stats)
        self.metrics.timer_backlog.set(await self.store.timer_backlog(partitions, backlog_until) if partitions else 0)
        return fired

    async def _watch_rules(self) -> None:
        """Hot reload: a changed, valid rules file replaces the rules between batches and
        starts a background re-evaluation; an invalid one is refused, logged and counted."""
        while not self.stopping.is_set():
            await self._pause(self.settings.rules_reload_s)
            try:
                fingerprint = rules_fingerprint(self.settings.rules_file)
            except OSError as exc:
                log.error("cannot read the rules: %s", exc)
                continue
            if fingerprint == self._rules_text:
                continue
            self._rules_text = fingerprint
            rules, problems = check_files(self.settings.rules_file)
            if rules is not None and (undeclared := self._undeclared(rules)):
                rules, problems = None, [f"actions to undeclared topics: {', '.join(undeclared)}"]
            if rules is None:
                self.metrics.rules_reloads.labels("refused").inc()
                log.error(
                    "new rules refused, %s stays in force:\n%s", self.processor.rules.version, "\n".join(problems)
                )
                continue
            if rules.version == self.processor.rules.version:
                continue
            log.info("rules switched: %s -> %s", self.processor.rules.version, rules.version)
            self.processor.rules = rules
            self.rules = rules
            self.metrics.rules_info.info({"version": rules.version})
            self.metrics.rules_reloads.labels("applied").inc()
            if self._reevaluation is not None:
                self._reevaluation.cancel()
            self._reevaluation = asyncio.create_task(self._reevaluate_all(rules))

    async def _reevaluate_all(self, rules: RuleSet, rescore: bool = False) -> int:
        """Every customer this worker owns, in throttled batches, beside live traffic.
        ``rescore``: after the population sample moved (see ``rescore``)."""
        settings = self.settings
        done = 0
        while not self.time_known and not self.stopping.is_set():
            await self._pause(0.5)  # event time: nothing is decided before the first record says what time it is
        try:
            async for ids in self.store.scan_customers(count=settings.reevaluate_batch):
                if self.processor.rules is not rules or self.stopping.is_set():
                    return done  # superseded by a newer switch, or stopping
                owned = frozenset(self._owned_partitions())
                if owned:  # the customers whose home partition this worker owns (the others are skipped)
                    prepared = await self._decide_and_publish(
                        functools.partial(self.processor.reevaluate, rules=rules, rescore=rescore, owned=owned), ids
                    )
                    done += prepared.stats.evaluated
                    self.metrics.reevaluated.inc(prepared.stats.evaluated)
                await asyncio.sleep(settings.reevaluate_pause_ms / 1000)
            log.info(
                "re-evaluated %d customers under %s%s", done, rules.version, " (population re-score)" if rescore else ""
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error(
                "re-evaluation under %s stopped after %d customers: %s",
                rules.version,
                done,
                type(sys.exc_info()[1]).__name__,
            )
            log.debug("re-evaluation stopped", exc_info=True)
        return done

    async def rescore(self) -> int:
        """Re-score every customer this worker owns against the current population sample:
        population-ranked scores (RFM quintiles) otherwise move only when an event or a
        timer re-evaluates the customer. Changes carry ``cause.kind = timer``."""
        return await self._reevaluate_all(self.processor.rules, rescore=True)

    def _cuts(self, rules: RuleSet) -> dict[str, list[float]]:
        """The population's cut points (twentieths) per ranked feature."""
        return {f: [v[int(i * (len(v) - 1) / 20)] for i in range(21)] for f, v in rules.population.samples.items() if v}

    def _moved(self, previous: dict[str, list[float]] | None, cuts: dict[str, list[float]]) -> bool:
        """Whether a cut point moved by more than ``rescore_drift`` since the last re-score."""
        if previous is None or set(previous) != set(cuts):
            return True  # never re-scored: customers decided before any sample are unscored
        drift = self.settings.rescore_drift
        return any(abs(a - b) > drift * max(abs(a), abs(b), 1e-9) for f in cuts for a, b in zip(previous[f], cuts[f]))

    async def _refresh_quantiles(self) -> None:
        """Keep the population samples behind quantile_score / pct_rank fresh: take the one
        in Redis when it is recent, else sample customers and share the new one."""
        period_ms = int(self.settings.quantiles_refresh_s * 1000)
        while not self.stopping.is_set():
            rules = self.processor.rules
            if rules.population_features and self.time_known:
                try:
                    now = self.processor.clock.now()
                    shared = await self.store.quantile_samples()
                    if shared is not None and 0 <= now - shared[0] < period_ms:
                        if shared[0] != rules.population.taken_at:
                            rules.population.replace(shared[1], shared[0])
                            await self._maybe_rescore(rules)
                    else:
                        samples = await self._sample_population(rules, now)
                        if samples:
                            await self.store.save_quantile_samples(now, samples)
                            rules.population.replace(samples, now)
                            log.info("population sample renewed: %s", {k: len(v) for k, v in samples.items()})
                            await self._maybe_rescore(rules)
                except Exception as exc:
                    log.warning("population sample refresh failed: %s", type(exc).__name__)
                    log.debug("population sample refresh failed", exc_info=True)
            waiting = bool(rules.population_features) and rules.population.taken_at is None
            await self._pause(
                min(self.settings.quantiles_refresh_s, 2.0) if waiting else self.settings.quantiles_refresh_s
            )

    async def renew_population_sample(self) -> None:
        """Take a new population sample now and share it (the demo's last step; tools)."""
        rules = self.processor.rules
        if rules.population_features and self.time_known:
            now = self.processor.clock.now()
            samples = await self._sample_population(rules, now)
            if samples:
                await self.store.save_quantile_samples(now, samples)
                rules.population.replace(samples, now)

    async def _maybe_rescore(self, rules: RuleSet) -> None:
        """A background re-score when the sample moved enough since the last one (which any
        worker may have run: the cut points it used are kept in Redis), one at a time."""
        if self._rescoring is not None and not self._rescoring.done():
            return
        cuts = self._cuts(rules)
        if self._moved(await self.store.rescored_cuts(), cuts):
            await self.store.save_rescored_cuts(cuts)
            self._rescoring = asyncio.create_task(self._reevaluate_all(rules, rescore=True))

    async def _sample_population(self, rules: RuleSet, now: int) -> dict[str, list[float]]:
        values: dict[str, list[float]] = {name: [] for name in rules.population_features}
        seen = 0
        async for ids in self.store.scan_customers(count=500):
            for loaded in (await self.store.load(ids)).values():
                if loaded.blob is None:
                    continue
                try:
                    features = Features(CustomerState.loads(loaded.blob), now, rules.derived)
                    read = {name: features[name] for name in values}
                except Exception as exc:
                    self.metrics.quarantined.labels("sample").inc()
                    log.warning("customer left out of the population sample: %s", type(exc).__name__)
                    continue
                for name, value in read.items():
                    if value is not None and isinstance(value, (int, float)) and math.isfinite(value):
                        values[name].append(value)
            seen += len(ids)
            if seen >= self.settings.quantiles_sample:
                break
        return {name: _thin(sorted(vals), 2000) for name, vals in values.items() if vals}

    async def _watch_lag(self) -> None:
        """Consumer lag per owned partition, for the lag gauges: the high watermark (from the
        last fetch) minus the committed offset (what a new owner would start from), or minus
        the position before anything is committed."""
        while not self.stopping.is_set():
            lags: dict[tuple[str, int], int] = {}
            for tp in self.consumer.assignment():
                try:
                    highwater = self.consumer.highwater(tp)
                    if highwater is None:
                        continue  # not fetched yet
                    done = self.processor.committed.get(f"{tp.topic}:{tp.partition}")
                    if done is None:
                        done = await asyncio.wait_for(self.consumer.position(tp), 1)
                    lags[(tp.topic, tp.partition)] = max(0, highwater - done)
                except Exception as exc:
                    log.debug("lag of %s unknown: %r", tp, exc)
            self.metrics.set_consumer_lag(lags)
            await self._pause(LAG_INTERVAL_S)

    async def _sweep_erasures(self) -> None:
        """Delete erased customers whose erase is committed but whose hash is still there: the
        worker that wrote it stopped between its commit and its cleanup (engine.store_redis)."""
        while not self.stopping.is_set():
            await self._pause(ERASE_SWEEP_S)
            if self.stopping.is_set():
                break  # the clients are closing
            try:
                done = [(cid, row.version) for cid, row in await self.store.erasing() if self._erase_committed(row)]
                if done:
                    await self.store.outbox_published(done)
                    log.info("deleted %d erased customers left behind", len(done))
            except Exception as exc:
                log.warning("erase sweep failed: %s", type(exc).__name__)  # never the message: it may name the customer
                log.debug("erase sweep failed", exc_info=True)

    def _erase_committed(self, row: Loaded) -> bool:
        if row.blob is not None:
            return False  # a customer again (its write took it off the erasing set)
        if row.offsets is None:
            return row.version == 0  # the hash is gone already: only the set entry is left
        committed = self.processor.committed  # partitions this worker owns only
        return all(tp in committed and committed[tp] > offset for tp, offset in orjson.loads(row.offsets).items())

    async def _refresh_population(self) -> None:
        while not self.stopping.is_set():
            try:
                self.metrics.set_population(await self.store.population())
            except Exception as exc:
                log.debug("population refresh failed: %r", exc)
            await self._pause(5)

    async def _close(self) -> None:
        for close in (self.consumer.stop, self.producer.stop, self.redis.aclose):
            try:
                await close()
            except Exception as exc:
                log.debug("close failed: %r", exc)
