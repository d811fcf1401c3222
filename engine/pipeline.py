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
from engine.evaluate import CHANGES_TOPIC, MEMBERS_TOPIC, FoldError, FoldResult, Output, fold_customer, reevaluate_customer
from engine.events import Event, Rejected
from engine.metrics import Metrics
from engine.rules import RuleSet
from engine.settings import Settings
from engine.state import CustomerState
from engine.store_redis import HISTORY, Loaded, RedisStore, Write, timer_key
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
    # (customer, version, timer key, next check) written with an outbox; a timer or rules
    # decision's outbox keeps the customer due at once until it is published (then: the real next check)
    outboxes: list[tuple[str, int, str, int | None | str]] = field(default_factory=list)


@dataclass(slots=True)
class Prepared:
    """A batch whose state is written: what remains is to publish and commit."""

    stats: BatchStats
    records: list[OutRecord]
    produced_at: list[int] = field(default_factory=list)  # Kafka timestamps of the events behind a sample of the changes


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
            if prepared.produced_at:
                self.metrics.changes_published(prepared.produced_at, wall_ms())

    async def prepare(self, records: Iterable[Record]) -> Prepared:
        stats = BatchStats()
        now = wall_ms()
        by_customer: dict[str, list[Event]] = defaultdict(list)
        rejected: list[Rejected] = []
        lag_ms: list[int] = []
        produced: dict[tuple[str, int, int], int] = {}  # valid records' Kafka timestamps
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
                produced[(rec.topic, rec.partition, rec.offset)] = rec.timestamp

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
        return Prepared(stats, out_records, _produced_at(outputs, produced))

    async def reevaluate(self, customer_ids: list[str], rules: RuleSet, *, rescore: bool = False) -> Prepared:
        """Re-evaluate these customers under ``rules`` (after a rules switch): changes carry
        ``cause.kind = rules``; state is written with the same compare-and-set as events.
        ``rescore``: the population sample moved instead, so the time-dependent dimensions
        (population-ranked ones among them) are re-evaluated, as a timer would (``timer``)."""
        now = self.clock.now()
        if rescore:
            cause: dict[str, object] = {"kind": "timer"}
            key = f"population:{rules.population.taken_at}:{now}"
        else:
            cause, key = {"kind": "rules", "rules_version": rules.version}, f"rules:{rules.version}"
        return await self._without_events([(cid, now) for cid in customer_ids], rules, cause, key)

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
        actions: Counter[tuple[str, str]] = Counter()
        changes: Counter[tuple[str, str, str]] = Counter()
        real_due: dict[str, int | None | str] = {}  # "" = the written next check is the real one
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
                    held = any(p.get("c") is None for p in state.pending)  # no input record will re-send it
                    writes.append(_write(cid, loaded[cid], state, result, timer_key(self.partition_of(cid)), decided if held else due))
                    real_due[cid] = due if held else ""
            ok = dict(zip((w.customer_id for w in writes), await self.store.save(writes)))
            stats.outboxes += [
                (w.customer_id, w.expected_version + 1, w.timer_key, real_due[w.customer_id])
                for w in writes if (w.outbox or w.erased) and ok[w.customer_id]
            ]  # fmt: skip
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
                actions.update(result.actions)
                changes.update((d, str(old), str(new)) for d, old, new in result.changes)
            if lost:
                self.metrics.cas_conflicts.inc(len(lost))
            todo = [cid for cid in todo if cid in lost]
        if todo:
            raise ConcurrentWriteError(f"{len(todo)} customers changed concurrently {MAX_CAS_ROUNDS} times in a row")
        for (name, outcome), n in actions.items():
            self.metrics.action(name, outcome, n)
        for labels, n in outcomes.items():
            self.metrics.events.labels(*labels).inc(n)
        for labels, n in changes.items():
            self.metrics.changes.labels(*labels).inc(n)
        return [out for cid in customer_ids for out in outputs.get(cid, ())]

    def _fold(self, rules: RuleSet, cid: str, events: list[Event], loaded: Loaded, rejected: list[Rejected]) -> tuple[CustomerState, FoldResult]:
        """Fold; an event that makes pure code raise is dead-lettered and the rest refolded."""
        while True:
            state = _loaded_state(loaded)
            try:
                result = fold_customer(
                    rules, state, cid, events,
                    now_for=self.clock.now_for, committed=self.committed, dedupe_horizon_ms=self._dedupe_ms,
                )  # fmt: skip
                return state, result
            except FoldError as exc:
                bad = events[exc.index]
                # The type only: the message of an exception raised on customer data may carry it (debug has it all).
                log.error("event at %s:%d:%d failed in processing: %s", bad.source.topic, bad.source.partition, bad.source.offset, type(exc.cause).__name__)
                log.debug("processing failed on %s:%d:%d", bad.source.topic, bad.source.partition, bad.source.offset, exc_info=exc.cause)
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


def _loaded_state(loaded: Loaded) -> CustomerState:
    state = CustomerState.loads(loaded.blob, loaded.outbox)
    if loaded.offsets:  # erased, the erase not committed yet: its records must still be recognised
        state.offsets = orjson.loads(loaded.offsets)
    return state


def _write(cid: str, loaded: Loaded, state: CustomerState, result: FoldResult, timers: str, due: int | None) -> Write:
    """What to write for one customer. Erased with nothing new since: no state document, only
    the applied offsets and the outbox, until the erase is committed (then the key goes)."""
    recent = _recent_changes(result.outputs, loaded.outbox)
    if result.erased and state.is_empty:
        offsets = orjson.dumps(state.offsets)
        return Write(cid, loaded.version, b"", state.dumps_outbox(), result.population, timers, None, recent, forget=True, offsets=offsets)
    return Write(cid, loaded.version, state.dumps(), state.dumps_outbox(), result.population, timers, due, recent, forget=result.erased)


def _recent_changes(outputs: list[Output], outbox: bytes | None) -> tuple[bytes, ...]:
    """The change records this write adds to the customer's recent changes, oldest first:
    not the outbox's re-sends (added when first written), nothing before an erase."""
    resent = {e["v"]["change_id"] for e in orjson.loads(outbox) if e["t"] == CHANGES_TOPIC and e["v"]} if outbox else set()
    recent: list[dict[str, object]] = []
    for out in outputs:
        if out.topic == CHANGES_TOPIC and out.value is not None and out.value["change_id"] not in resent:
            recent.append(out.value)
        elif out.topic == MEMBERS_TOPIC and out.value is None:  # the tombstone of an erase
            recent.clear()
    return tuple(orjson.dumps({k: v[k] for k in RECENT_FIELDS}) for v in recent[-HISTORY:])  # type: ignore[index]


# What the recent-changes list keeps of a change (the full record is on segments.changes).
RECENT_FIELDS = ("change_id", "dimension", "from", "to", "at", "reason")


def _produced_at(outputs: list[Output], produced: dict[tuple[str, int, int], int], sample: int = 256) -> list[int]:
    """When the events behind (a sample of) the batch's segment changes were produced, for
    the produce -> change latency. Outbox entries caused by records outside this batch are left out."""
    changes = [o for o in outputs if o.topic == CHANGES_TOPIC and o.cause is not None and o.offset is not None]
    stamps: list[int] = []
    for out in changes[:: max(1, len(changes) // sample)]:
        topic, _, partition = out.cause.rpartition(":")  # type: ignore[union-attr]
        ts = produced.get((topic, int(partition), out.offset))  # type: ignore[arg-type]
        if ts is not None and ts > 0:
            stamps.append(ts)
    return stamps


def _merge_by_time(events: list[Event]) -> list[Event]:
    """One customer's events from several topics, merged by event time; each
    topic-partition's own records keep their offset order (the applied-offset check needs it)."""
    per_tp: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for e in events:
        per_tp[(e.source.topic, e.source.partition)].append(e)
    return list(heapq.merge(*per_tp.values(), key=lambda e: e.ts))


def _rejected(event: Event, code: str, message: str) -> Rejected:
    return Rejected(code, message, event.source, event.customer_id.encode(), orjson.dumps(event.body))
