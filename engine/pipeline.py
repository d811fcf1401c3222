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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from .clock import Clock, wall_ms
from .dlq import dlq_record
from .errors import ConcurrentWriteError
from .evaluate import CHANGES_TOPIC, MEMBERS_TOPIC, FoldError, FoldResult, Output, fold_customer, reevaluate_customer
from .events import Event, Rejected
from .metrics import Metrics
from .rules import RuleSet
from .settings import Settings
from .state import CustomerState, LimitExceeded, check_size
from .store_redis import HISTORY, Loaded, RedisStore, Write, timer_key
from .timers import next_check
from .validate import validate

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
    evaluated: int = 0  # customers folded and written
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # what to commit
    # (customer, version, timer key, next check) written with an outbox; a timer or rules
    # decision's outbox keeps the customer due at once until it is published (then: the real next check)
    outboxes: list[tuple[str, int, str, int | str | None]] = field(default_factory=list)


@dataclass(slots=True)
class Prepared:
    """A batch whose state is written: what remains is to publish and commit."""

    stats: BatchStats
    records: list[OutRecord]
    produced_at: list[int] = field(
        default_factory=list
    )  # Kafka timestamps of the events behind a sample of the changes


UntilFn = Callable[[int], "int | None"]  # input partition -> latest time its customers may be decided at


class BatchProcessor:
    def __init__(
        self, settings: Settings, rules: RuleSet, store: RedisStore, sink: Sink, clock: Clock, metrics: Metrics,
        *, decision_limit: UntilFn | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.rules = rules
        self.store = store
        self.sink = sink
        self.clock = clock
        self.metrics = metrics
        self.committed: dict[str, int] = {}  # "topic:partition" -> committed offset (next to read)
        self.read: dict[tuple[str, int], int] = {}  # topic-partition -> next offset after the records prepared
        self._dedupe_ms = int(settings.dedupe_horizon_days * 86_400_000)
        self._skew_ms = int(settings.future_skew_s * 1000)
        # How far time may move a customer of a partition with no event at hand (event time:
        # not past the partition's own watermark while it lags); None: no limit but the clock.
        self.decision_limit = decision_limit

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
                self.clock.observe(rec.topic, rec.partition, result.ts)
                lag_ms.append(now - result.ts)
                produced[(rec.topic, rec.partition, rec.offset)] = rec.timestamp

        for cid, events in by_customer.items():
            if len(events) > 1 and len({(e.source.topic, e.source.partition) for e in events}) > 1:
                by_customer[cid] = _merge_by_time(events)
        rules = self.rules  # one version for the whole batch, whatever a reload does meanwhile

        # Events dead-lettered while folding, per customer: a customer folded again (it lost a
        # compare-and-set race) replaces its list, so that no record is dead-lettered twice.
        fold_rejects: dict[str, list[Rejected]] = {}

        def fold(cid: str, loaded: Loaded) -> Folded:
            fold_rejects[cid] = []
            return self._fold(rules, cid, by_customer[cid], loaded, fold_rejects[cid])

        def failed(cid: str, exc: BaseException) -> None:  # the customer could not be folded at all
            fold_rejects[cid] = [
                _rejected(e, "processing_error", f"processing failed: {type(exc).__name__}") for e in by_customer[cid]
            ]

        outputs = await self._apply(list(by_customer), fold, stats, rules, stage="fold", failed=failed)
        for rejects in fold_rejects.values():
            rejected += rejects
        for tp, offset in stats.next_offsets.items():
            self.read[tp] = max(self.read.get(tp, 0), offset)
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

    async def reevaluate(
        self, customer_ids: list[str], rules: RuleSet, *, rescore: bool = False, owned: frozenset[int] | None = None
    ) -> Prepared:
        """Re-evaluate these customers under ``rules`` (after a rules switch): changes carry
        ``cause.kind = rules``; state is written with the same compare-and-set as events.
        ``rescore``: the population sample moved instead, so the time-dependent dimensions
        (population-ranked ones among them) are re-evaluated, as a timer would (``timer``).
        ``owned``: only customers whose home partition is one of these (the caller's)."""
        now = self.clock.now()
        if rescore:
            cause: dict[str, object] = {"kind": "timer"}
            key = f"population:{rules.population.taken_at}:{now}"
        else:
            cause, key = {"kind": "rules", "rules_version": rules.version}, f"rules:{rules.version}"
        return await self._without_events([(cid, now) for cid in customer_ids], rules, cause, key, owned=owned)

    async def fire_timers(self, due: list[tuple[str, int]], partition: int) -> Prepared:
        """Re-evaluate customers whose next check is due (from ``partition``'s timer set),
        each at its due time (``cause.kind = timer``)."""
        return await self._without_events(due, self.rules, {"kind": "timer"}, "timer", partition=partition)

    async def _without_events(
        self, customers: list[tuple[str, int]], rules: RuleSet, cause: dict[str, object], key: str,
        *, partition: int | None = None, owned: frozenset[int] | None = None,
    ) -> Prepared:  # fmt: skip
        stats = BatchStats()
        at = dict(customers)
        stale: list[tuple[str, str]] = []  # timer entries whose customer is gone or lives elsewhere now
        limits: dict[int, int | None] = {}  # home partition -> its decision limit, once per call

        def fold(cid: str, loaded: Loaded) -> Folded | None:
            if loaded.blob is None:  # erased (or never written): nothing to decide
                if partition is not None:
                    stale.append((timer_key(partition), cid))
                return None
            state = CustomerState.loads(loaded.blob, loaded.outbox)
            home = home_of(state)
            if partition is not None:
                if home is None:
                    state.home = home = partition  # written before homes were recorded: adopt the set it is in
                elif home != partition:
                    stale.append((timer_key(partition), cid))
                    return None
            elif owned is not None and home not in owned:
                return None  # another worker's customer
            when = at[cid]
            if partition is None and self.decision_limit is not None:
                if home is not None and home not in limits:
                    limits[home] = self.decision_limit(home)
                limit = None if home is None else limits[home]
                if limit is None:
                    return None  # its partition's time is not known yet (event time): not decided ahead of its records
                when = min(when, limit)
            result = _reevaluate(rules, cid, state, when, cause, key)
            return state, result, encode(state, loaded)

        outputs = await self._apply(list(at), fold, stats, rules, stage="timer" if partition is not None else "rules")
        if stale:
            await self.store.drop_timers(stale)
        records: list[OutRecord] = [
            (o.topic, o.key.encode(), None if o.value is None else orjson.dumps(o.value)) for o in outputs
        ]
        stats.published = len(records)
        return Prepared(stats, records)

    async def _apply(
        self, customer_ids: list[str], fold: Callable[[str, Loaded], Folded | None], stats: BatchStats, rules: RuleSet,
        *, stage: str, failed: Callable[[str, BaseException], None] | None = None,
    ) -> list[Output]:  # fmt: skip
        """Fold every customer and write the states; retry customers that lost a race.

        An exception while folding or encoding one customer is that customer's alone: it is
        quarantined (counted, marked in Redis, its timer taken off until an event for it
        applies), ``failed`` is told, and the rest of the batch goes on."""
        outputs: dict[str, list[Output]] = {}
        outcomes: Counter[tuple[str, str, str]] = Counter()
        actions: Counter[tuple[str, str]] = Counter()
        changes: Counter[tuple[str, str, str]] = Counter()
        real_due: dict[str, int | str | None] = {}  # "" = the written next check is the real one
        todo = list(customer_ids)
        for _ in range(MAX_CAS_ROUNDS):
            if not todo:
                break
            loaded = await self.store.load(todo)
            writes: list[Write] = []
            results: dict[str, FoldResult] = {}
            quarantined: list[tuple[str, str, str]] = []
            for cid in todo:
                try:
                    folded = fold(cid, loaded[cid])
                    if folded is None:
                        continue
                    state, result, blob = folded
                    if (
                        result.applied or result.duplicates or result.changes or result.reschedule
                    ):  # else nothing changed
                        decided = state.checked_at if state.checked_at is not None else self.clock.now()
                        due = None if rules.time_plan.empty else next_check(rules.time_plan, state, decided)
                        held = any(p.get("c") is None for p in state.pending)  # no input record will re-send it
                        home = home_of(state)
                        timers = "" if home is None else timer_key(home)
                        writes.append(_write(cid, loaded[cid], state, blob, result, timers, decided if held else due))
                        real_due[cid] = due if held else ""
                except Exception as exc:
                    quarantined.append((cid, stage, self._home_timers(loaded[cid])))
                    log.error(
                        "customer quarantined at %s: %s", stage, type(exc).__name__
                    )  # never the message: it may carry customer data
                    log.debug("customer %r quarantined at %s", cid, stage, exc_info=True)
                    if failed is not None:
                        failed(cid, exc)
                    continue
                results[cid] = result
            if quarantined:
                await self.store.quarantine(quarantined)
                for _, stage_, _ in quarantined:
                    self.metrics.quarantined.labels(stage_).inc()
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
                stats.evaluated += 1
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

    @staticmethod
    def _home_timers(loaded: Loaded) -> str:
        """The timer set of a customer whose state may not even decode ("" if unknown)."""
        try:
            home = home_of(CustomerState.loads(loaded.blob))
        except Exception:
            return ""
        return "" if home is None else timer_key(home)

    def _fold(self, rules: RuleSet, cid: str, events: list[Event], loaded: Loaded, rejected: list[Rejected]) -> Folded:
        """Fold and encode; an event that makes pure code raise, or leaves a state that cannot
        be stored, is dead-lettered (with the code the error carries, else ``processing_error``)
        and the rest refolded."""
        while True:
            try:
                state, result = self._fold_events(rules, cid, events, loaded)
            except FoldError as exc:
                index, cause = exc.index, exc.cause
            else:
                try:
                    blob = encode(state, loaded)
                except Exception as exc:
                    culprit = self._unstorable(rules, cid, events, loaded)
                    if culprit is None:
                        raise  # the state as loaded cannot be stored: the customer fails
                    index, cause = culprit, exc
                else:
                    for event in events:  # co-partitioning broken upstream: still correct, counted
                        if event.source.partition != state.home:
                            self.metrics.copartition_mismatch.labels(event.source.topic).inc()
                    return state, result, blob
            bad = events[index]
            if isinstance(cause, LimitExceeded):
                code, message = cause.code, cause.message
            else:  # the type only: the message of an exception raised on customer data may carry it (debug has it all)
                code, message = "processing_error", f"processing failed: {type(cause).__name__}"
            log.error(
                "event at %s:%d:%d failed in processing: %s",
                bad.source.topic,
                bad.source.partition,
                bad.source.offset,
                type(cause).__name__,
            )
            log.debug(
                "processing failed on %s:%d:%d",
                bad.source.topic,
                bad.source.partition,
                bad.source.offset,
                exc_info=cause,
            )
            rejected.append(_rejected(bad, code, message))
            events = events[:index] + events[index + 1 :]

    def _fold_events(
        self, rules: RuleSet, cid: str, events: list[Event], loaded: Loaded
    ) -> tuple[CustomerState, FoldResult]:
        state = _loaded_state(loaded)
        result = fold_customer(
            rules,
            state,
            cid,
            events,
            now_for=self.clock.now_for,
            committed=self.committed,
            dedupe_horizon_ms=self._dedupe_ms,
        )
        return state, result

    def _unstorable(self, rules: RuleSet, cid: str, events: list[Event], loaded: Loaded) -> int | None:
        """The first event after which the folded state cannot be encoded (rare: refolds
        prefixes); None when the state as loaded cannot be."""
        try:
            encode(_loaded_state(loaded), loaded)
        except Exception:
            return None
        for i in range(len(events)):
            try:
                encode(self._fold_events(rules, cid, events[: i + 1], loaded)[0], loaded)
            except Exception:
                return i
        return len(events) - 1


Folded = tuple[CustomerState, FoldResult, bytes]  # the state, what folding did, the encoded state


def home_of(state: CustomerState) -> int | None:
    """The input partition whose owner fires the customer's timers and re-evaluates it: the
    partition of its first record (recorded in the state); for a state written before that
    was recorded, the lowest partition it has records from."""
    if state.home is not None:
        return state.home
    partitions = [int(tp.rpartition(":")[2]) for tp in state.offsets]
    return min(partitions) if partitions else None


def encode(state: CustomerState, loaded: Loaded) -> bytes:
    """The state document as stored; raises when it cannot be (a number JSON cannot hold) or
    when it would grow past the size limit (``LimitExceeded``; ``loaded``: what is stored now)."""
    blob = state.dumps()
    check_size(blob, len(loaded.blob or b""))
    return blob


def _reevaluate(
    rules: RuleSet, cid: str, state: CustomerState, at: int, cause: dict[str, object], key: str
) -> FoldResult:
    result = FoldResult()
    if key != "timer":  # never decide before what the customer did, nor before its last decision
        at = max(
            at, state.max_ts or 0, state.checked_at or 0
        )  # (a timer keeps its due time: stale, it decides nothing)
    result.decided_at = at
    reevaluate_customer(rules, state, cid, at, result, dict(cause), f"{key}:{at}" if key == "timer" else key)
    return result


def _loaded_state(loaded: Loaded) -> CustomerState:
    state = CustomerState.loads(loaded.blob, loaded.outbox)
    if loaded.offsets:  # erased, the erase not committed yet: its records must still be recognised
        state.offsets = orjson.loads(loaded.offsets)
    return state


def _write(
    cid: str, loaded: Loaded, state: CustomerState, blob: bytes, result: FoldResult, timers: str, due: int | None
) -> Write:
    """What to write for one customer. Erased with nothing new since: no state document, only
    the applied offsets and the outbox, until the erase is committed (then the key goes)."""
    recent = _recent_changes(result.outputs, loaded.outbox)
    if result.erased and state.is_empty:
        offsets = orjson.dumps(state.offsets)
        return Write(
            cid,
            loaded.version,
            b"",
            state.dumps_outbox(),
            result.population,
            timers,
            None,
            recent,
            forget=True,
            offsets=offsets,
        )
    return Write(
        cid, loaded.version, blob, state.dumps_outbox(), result.population, timers, due, recent, forget=result.erased
    )


def _recent_changes(outputs: list[Output], outbox: bytes | None) -> tuple[bytes, ...]:
    """The change records this write adds to the customer's recent changes, oldest first:
    not the outbox's re-sends (added when first written), nothing before an erase."""
    resent = (
        {e["v"]["change_id"] for e in orjson.loads(outbox) if e["t"] == CHANGES_TOPIC and e["v"]} if outbox else set()
    )
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
