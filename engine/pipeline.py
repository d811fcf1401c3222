"""One batch of input records, end to end:

    validate -> load states (1 Redis call) -> fold + evaluate (pure)
    -> compare-and-set states with their outbox (1 Redis call)      = ``prepare``
    -> publish the outputs and wait for the acks                    = ``publish``

The caller commits the batch's offsets only after ``publish`` returns, and may prepare
the next batch while this one is being published. Any exception leaves the batch
uncommitted; processing the same records again is harmless because every customer's
state records the last applied offset per topic-partition, and its outbox the records
that those offsets caused.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import orjson
from aiokafka.partitioner import murmur2

from engine.clock import Clock, wall_ms
from engine.dlq import dlq_record
from engine.evaluate import FoldError, FoldResult, Output, fold_customer, reevaluate_customer
from engine.events import Event, Rejected
from engine.metrics import Metrics
from engine.rules import RuleSet
from engine.settings import Settings
from engine.state import CustomerState
from engine.store_redis import Loaded, RedisStore, Write, timer_key
from engine.timers import next_check
from engine.validate import validate

log = logging.getLogger(__name__)

DLQ_TOPIC = "events.dlq"
MAX_CAS_ROUNDS = 5
OutRecord = tuple[str, bytes | None, bytes | None]  # topic, key, value


class Record(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


class Sink(Protocol):
    async def publish(self, records: list[OutRecord]) -> None:
        """Send every record and return when all are acknowledged."""


@dataclass(slots=True)
class BatchStats:
    records: int = 0
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    rejected: int = 0
    changes: int = 0
    published: int = 0
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # what to commit
    outboxes: list[tuple[str, int]] = field(default_factory=list)  # (customer, version) written with an outbox


@dataclass(slots=True)
class Prepared:
    """A batch whose state is written: what remains is to publish and commit."""

    stats: BatchStats
    records: list[OutRecord]


class ConcurrentWriteError(RuntimeError):
    """A customer kept changing under us (another worker owns its partition too)."""


class BatchProcessor:
    def __init__(self, settings: Settings, rules: RuleSet, store: RedisStore, sink: Sink, clock: Clock, metrics: Metrics) -> None:
        self.settings = settings
        self.rules = rules
        self.store = store
        self.sink = sink
        self.clock = clock
        self.metrics = metrics
        self.committed: dict[str, int] = {}  # "topic:partition" -> committed offset (next to read)
        self._dedupe_ms = int(settings.dedupe_horizon_days * 86_400_000)
        self.input_partitions = 1  # set by the worker once it knows the input topics
        self._partitions: dict[str, int] = {}  # this batch's customers -> their input partition
        self._skew_ms = int(settings.future_skew_s * 1000)

    def partition_of(self, customer_id: str) -> int:
        """The input partition that holds the customer (Kafka's default partitioner)."""
        known = self._partitions.get(customer_id)
        if known is not None:
            return known
        return (murmur2(customer_id.encode()) & 0x7FFFFFFF) % self.input_partitions

    async def process(self, records: Iterable[Record]) -> BatchStats:
        """Prepare and publish in one go (tests, tools); the worker overlaps the two."""
        prepared = await self.prepare(records)
        await self.publish(prepared)
        return prepared.stats

    async def publish(self, prepared: Prepared) -> None:
        if prepared.records:
            await self.sink.publish(prepared.records)

    async def prepare(self, records: Iterable[Record]) -> Prepared:
        stats = BatchStats()
        now = wall_ms()
        by_customer: dict[str, list[Event]] = defaultdict(list)
        rejected: list[Rejected] = []
        lag_ms: list[int] = []
        for rec in records:
            stats.records += 1
            tp = (rec.topic, rec.partition)
            if rec.offset >= stats.next_offsets.get(tp, 0):
                stats.next_offsets[tp] = rec.offset + 1
            result = validate(
                rec.topic, rec.partition, rec.offset, rec.key, rec.value,
                now_ms=now, max_bytes=self.settings.max_event_bytes, future_skew_ms=self._skew_ms,
            )  # fmt: skip
            if isinstance(result, Rejected):
                rejected.append(result)
            else:
                by_customer[result.customer_id].append(result)
                lag_ms.append(now - result.ts)

        for cid, events in by_customer.items():
            if len(events) > 1 and len({(e.source.topic, e.source.partition) for e in events}) > 1:
                by_customer[cid] = _merge_by_time(events)
        rules = self.rules  # one version for the whole batch, whatever a reload does meanwhile
        for cid, events in by_customer.items():
            self._partitions.setdefault(cid, events[0].source.partition)
        outputs = await self._apply(
            list(by_customer), lambda cid, loaded: self._fold(rules, cid, by_customer[cid], loaded, rejected), stats, rules
        )
        self._partitions.clear()
        out_records: list[OutRecord] = []
        for rej in rejected:
            out_records.append((DLQ_TOPIC, *dlq_record(rej, now)))
        for code, n in Counter(r.code for r in rejected).items():
            self.metrics.dlq.labels(code).inc(n)
        for topic, n in Counter(r.source.topic for r in rejected).items():
            self.metrics.events.labels(topic, "unknown", "rejected").inc(n)
        for out in outputs:
            out_records.append((out.topic, out.key.encode(), None if out.value is None else orjson.dumps(out.value)))
        for lag in lag_ms[:: max(1, len(lag_ms) // 64)]:  # a sample bounds the cost per batch
            self.metrics.event_lag.observe(lag / 1000)
        stats.rejected = len(rejected)
        stats.published = len(out_records)
        return Prepared(stats, out_records)

    async def reevaluate(self, customer_ids: list[str], rules: RuleSet) -> Prepared:
        """Re-evaluate these customers under ``rules`` (after a rules switch): changes carry
        ``cause.kind = rules``; state is written with the same compare-and-set as events."""
        now = self.clock.now()
        cause = {"kind": "rules", "rules_version": rules.version}
        return await self._without_events([(cid, now) for cid in customer_ids], rules, cause, f"rules:{rules.version}")

    async def fire_timers(self, due: list[tuple[str, int]]) -> Prepared:
        """Re-evaluate customers whose next check is due, each at its due time (``cause.kind = timer``)."""
        return await self._without_events(due, self.rules, {"kind": "timer"}, "timer")

    async def _without_events(self, customers: list[tuple[str, int]], rules: RuleSet, cause: dict[str, object], key: str) -> Prepared:
        stats = BatchStats()
        at = dict(customers)
        loaded = await self.store.load(list(at))
        gone = [cid for cid, row in loaded.items() if row.blob is None]
        if gone:  # erased (or never written): their timers are stale
            await self.store.drop_timers([(timer_key(self.partition_of(cid)), cid) for cid in gone])
            for cid in gone:
                del at[cid]
        outputs = await self._apply(list(at), lambda cid, loaded: _reevaluate(rules, cid, loaded, at[cid], cause, key), stats, rules)
        records: list[OutRecord] = [(o.topic, o.key.encode(), None if o.value is None else orjson.dumps(o.value)) for o in outputs]
        stats.published = len(records)
        return Prepared(stats, records)

    async def _apply(
        self, customer_ids: list[str], fold: Callable[[str, Loaded], tuple[CustomerState, FoldResult]], stats: BatchStats, rules: RuleSet
    ) -> list[Output]:
        """Fold every customer and write the states; retry customers that lost a race."""
        outputs: dict[str, list[Output]] = {}
        outcomes: Counter[tuple[str, str, str]] = Counter()
        changes: Counter[tuple[str, str, str]] = Counter()
        todo = list(customer_ids)
        for _ in range(MAX_CAS_ROUNDS):
            if not todo:
                break
            loaded = await self.store.load(todo)
            writes: list[Write] = []
            results: dict[str, FoldResult] = {}
            for cid in todo:
                state, result = fold(cid, loaded[cid])
                results[cid] = result
                if result.applied or result.duplicates or result.changes or result.reschedule:  # else nothing changed
                    decided = result.decided_at if result.decided_at is not None else self.clock.now()
                    due = None if rules.time_plan.empty else next_check(rules.time_plan, state, decided)
                    writes.append(
                        Write(cid, loaded[cid].version, state.dumps(), state.dumps_outbox(), result.population, timer_key(self.partition_of(cid)), due)
                    )
            ok = dict(zip((w.customer_id for w in writes), await self.store.save(writes)))
            stats.outboxes += [(w.customer_id, w.expected_version + 1) for w in writes if w.outbox and ok[w.customer_id]]
            lost = {cid for cid, done in ok.items() if not done}
            for cid, result in results.items():
                if cid in lost:
                    continue
                outputs[cid] = result.outputs
                stats.applied += result.applied
                stats.duplicates += result.duplicates
                stats.redelivered += result.redelivered
                stats.changes += len(result.changes)
                outcomes.update(result.outcomes)
                changes.update((d, str(old), str(new)) for d, old, new in result.changes)
            if lost:
                self.metrics.cas_conflicts.inc(len(lost))
            todo = [cid for cid in todo if cid in lost]
        if todo:
            raise ConcurrentWriteError(f"{len(todo)} customers changed concurrently {MAX_CAS_ROUNDS} times in a row")
        for labels, n in outcomes.items():
            self.metrics.events.labels(*labels).inc(n)
        for labels, n in changes.items():
            self.metrics.changes.labels(*labels).inc(n)
        return [out for cid in customer_ids for out in outputs.get(cid, ())]

    def _fold(self, rules: RuleSet, cid: str, events: list[Event], loaded: Loaded, rejected: list[Rejected]) -> tuple[CustomerState, FoldResult]:
        """Fold; an event that makes pure code raise is dead-lettered and the rest refolded."""
        while True:
            state = CustomerState.loads(loaded.blob, loaded.outbox)
            try:
                result = fold_customer(
                    rules, state, cid, events,
                    now_for=self.clock.now_for, committed=self.committed, dedupe_horizon_ms=self._dedupe_ms,
                )  # fmt: skip
                return state, result
            except FoldError as exc:
                bad = events[exc.index]
                log.error("event at %s:%d:%d failed in processing: %r", bad.source.topic, bad.source.partition, bad.source.offset, exc.cause)
                rejected.append(_rejected(bad, "processing_error", f"processing failed: {type(exc.cause).__name__}"))
                events = events[: exc.index] + events[exc.index + 1 :]


def _reevaluate(rules: RuleSet, cid: str, loaded: Loaded, at: int, cause: dict[str, object], key: str) -> tuple[CustomerState, FoldResult]:
    state = CustomerState.loads(loaded.blob, loaded.outbox)
    result = FoldResult()
    if loaded.blob is not None:  # erased meanwhile: nothing to re-evaluate
        at = max(at, state.max_ts or 0)  # never decide before what the customer did
        result.decided_at = at
        reevaluate_customer(rules, state, cid, at, result, dict(cause), f"{key}:{at}" if key == "timer" else key)
    return state, result


def _merge_by_time(events: list[Event]) -> list[Event]:
    """One customer's events from several topics, merged by event time; each
    topic-partition's own records keep their offset order (the applied-offset check needs it)."""
    per_tp: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for e in events:
        per_tp[(e.source.topic, e.source.partition)].append(e)
    return list(heapq.merge(*per_tp.values(), key=lambda e: e.ts))


def _rejected(event: Event, code: str, message: str) -> Rejected:
    return Rejected(code, message, event.source, event.customer_id.encode(), orjson.dumps(event.body))
