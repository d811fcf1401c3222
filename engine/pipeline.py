"""One batch of input records, end to end:

    validate -> load states not cached (1 store call) -> fold + evaluate (pure)
    -> compare-and-set states with their outbox (1 store call)      = ``prepare``
    -> publish the outputs and wait for the acks                    = ``publish``

The caller commits the batch's offsets only after ``publish`` returns, and may prepare
the next batch while this one is being published. Any exception leaves the batch
uncommitted; processing the same records again is harmless because every customer's
state records the last applied offset per topic-partition, and its outbox the records
that those offsets caused.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from .clock import Clock, wall_ms
from .dlq import dlq_record
from .errors import ConcurrentWriteError
from .evaluate import FoldError, FoldResult, fold_customer, prune_outbox
from .events import Event, Rejected
from .metrics import Metrics
from .reasons import Reasons
from .records import Output, OutRecord, Record, Sink, TopicPartition, topic_partition
from .rules import RuleSet
from .settings import Settings
from .state import CustomerState, LimitExceeded
from .statecache import StateCache
from .store import Loaded, Published, Quarantine, Store, TimerEntry, Write
from .timers import RANKED, Moment
from .topic_names import DLQ_TOPIC
from .validate import validate
from .writes import (
    Folded,
    Moments,
    Signature,
    customer_write,
    encode,
    home_if_known,
    home_of,
    loaded_state,
    merge_by_time,
    out_record,
    produced_at,
    reevaluate,
    rejected,
)

log = logging.getLogger(__name__)

MAX_CAS_ROUNDS = 5
UntilFn = Callable[[int], "int | None"]  # input partition -> latest time its customers may be decided at


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
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)  # what to commit
    outboxes: list[Published] = field(default_factory=list)  # the writes that left an outbox, to drop once published


@dataclass(slots=True)
class Prepared:
    """A batch whose state is written: what remains is to publish and commit."""

    stats: BatchStats
    records: list[OutRecord]
    produced_at: list[int] = field(default_factory=list)  # Kafka timestamps behind a sample of the changes


class BatchProcessor:
    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        store: Store,
        sink: Sink,
        clock: Clock,
        metrics: Metrics,
        *,
        decision_limit: UntilFn | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.store = store
        self.sink = sink
        self.clock = clock
        self.metrics = metrics
        self.committed: dict[TopicPartition, int] = {}  # committed offset (the next to read)
        self.read: dict[TopicPartition, int] = {}  # the next offset after the records prepared
        self._dedupe_ms = int(settings.dedupe_horizon_days * 86_400_000)
        self._skew_ms = int(settings.future_skew_s * 1000)
        # How far time may move a customer of a partition with no event at hand (event time:
        # not past the partition's own watermark while it lags); None: no limit but the clock.
        self.decision_limit = decision_limit
        self.signature = Signature()  # of the outboxes it writes
        self.reasons = Reasons()  # the rule texts its recent changes name by code, once registered
        self.moments = Moments()  # the next moments of the customers it wrote last
        self.cache = StateCache(settings.state_cache_customers)  # and their states, decoded

    async def outbox_published(self, written: list[Published]) -> None:
        """Tell the store (and the cache) that these writes' outboxes are published."""
        await self.store.outbox_published(written)
        self.cache.published(written)

    async def process(self, records: Iterable[Record]) -> BatchStats:
        """Prepare and publish in one go (tests, tools); the worker overlaps the two."""
        prepared = await self.prepare(records)
        with self.signature.held():
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
        rejects: list[Rejected] = []
        lag_ms: list[int] = []
        produced: dict[tuple[str, int, int], int] = {}  # valid records' Kafka timestamps
        for rec in records:
            stats.records += 1
            tp = topic_partition(rec.topic, rec.partition)
            if rec.offset >= stats.next_offsets.get(tp, 0):
                stats.next_offsets[tp] = rec.offset + 1
            result = validate(
                rec.topic, rec.partition, rec.offset, rec.key, rec.value,
                now_ms=now, max_bytes=self.settings.max_event_bytes, future_skew_ms=self._skew_ms,
            )  # fmt: skip
            if isinstance(result, Rejected):
                rejects.append(result)
            else:
                by_customer[result.customer_id].append(result)
                self.clock.observe(rec.topic, rec.partition, result.ts)
                lag_ms.append(now - result.ts)
                produced[(rec.topic, rec.partition, rec.offset)] = rec.timestamp

        for cid, events in by_customer.items():
            if len(events) > 1 and len({(e.source.topic, e.source.partition) for e in events}) > 1:
                by_customer[cid] = merge_by_time(events)
        rules = self.rules  # one version for the whole batch, whatever a reload does meanwhile

        # Events dead-lettered while folding, per customer: a customer folded again (it lost a
        # compare-and-set race) replaces its list, so that no record is dead-lettered twice.
        fold_rejects: dict[str, list[Rejected]] = {}

        def fold(cid: str, loaded: Loaded, writer: str, cached: CustomerState | None) -> Folded:
            fold_rejects[cid] = []
            return self._fold(rules, cid, by_customer[cid], loaded, fold_rejects[cid], writer, cached)

        def failed(cid: str, exc: BaseException) -> None:  # the customer could not be folded at all
            message = f"processing failed: {type(exc).__name__}"
            fold_rejects[cid] = [rejected(e, "processing_error", message) for e in by_customer[cid]]

        with self.signature.held() as writer:
            outputs, decided = await self._apply(
                list(by_customer), fold, stats, rules, writer, stage="fold", failed=failed
            )
        for more in fold_rejects.values():
            rejects += more
        for tp, offset in stats.next_offsets.items():
            self.read[tp] = max(self.read.get(tp, 0), offset)
        out_records = [OutRecord(DLQ_TOPIC, *dlq_record(rej, now)) for rej in rejects]
        for code, n in Counter(r.code for r in rejects).items():
            self.metrics.dlq.labels(code).inc(n)
        self.metrics.rejected(rejects)
        out_records += decided
        for lag in lag_ms[:: max(1, len(lag_ms) // 64)]:  # a sample bounds the cost per batch
            self.metrics.event_lag.observe(lag / 1000)
        stats.rejected = len(rejects)
        stats.published = len(out_records)
        return Prepared(stats, out_records, produced_at(outputs, produced))

    async def reevaluate(
        self,
        customer_ids: list[str],
        rules: RuleSet,
        *,
        rescore: bool = False,
        owned: frozenset[int] | None = None,
        decided_after: int | None = None,
    ) -> Prepared:
        """Re-evaluate these customers under ``rules`` (after a rules switch): changes carry
        ``cause.kind = rules``; state is written with the same compare-and-set as events.
        ``rescore``: the population sample moved instead, so the time-dependent dimensions
        (population-ranked ones among them) are re-evaluated, as a timer would (``timer``).
        ``owned``: only customers whose home partition is one of these (the caller's).
        ``decided_after`` (a re-score): a customer whose every dimension that reads the
        population entered its segment later than this is left alone (those entries were
        decided with the sample the re-score is for: see segengine.worker.population)."""
        now = self.clock.now()
        if rescore:
            cause: dict[str, Any] = {"kind": "timer"}
            key = f"population:{rules.population.taken_at}:{now}"
        else:
            cause, key = {"kind": "rules", "rules_version": rules.version}, f"rules:{rules.version}"
        at = {cid: now for cid in customer_ids}
        moving = RESCORED if rescore else None
        return await self._without_events(
            at, rules, cause, key, owned=owned, decided_after=decided_after, moving=moving
        )

    async def fire_timers(self, due: list[TimerEntry], partition: int, through: int | None = None) -> Prepared:
        """Re-evaluate customers whose next check is due (from ``partition``'s timer set),
        each at its due time (``cause.kind = timer``), and with ``through`` (the time the due
        loop took them up to) every later moment of theirs up to it as well, each at its own
        time, as the due loop would fire them one after another: one write per customer, not
        one per moment."""
        at = {t.customer_id: t.due for t in due}
        return await self._without_events(
            at, self.rules, {"kind": "timer"}, "timer", partition=partition, through=through
        )

    async def _without_events(
        self,
        at: dict[str, int],
        rules: RuleSet,
        cause: dict[str, Any],
        key: str,
        *,
        partition: int | None = None,
        owned: frozenset[int] | None = None,
        decided_after: int | None = None,
        through: int | None = None,
        moving: frozenset[str] | None = None,
    ) -> Prepared:
        stats = BatchStats()
        ranked = _ranked_dimensions(rules) if decided_after is not None else ()
        stale: list[str] = []  # customers in ``partition``'s timers that are gone or live elsewhere now
        limits: dict[int, int | None] = {}  # home partition -> its decision limit, once per call

        def fold(cid: str, loaded: Loaded, writer: str, cached: CustomerState | None) -> Folded | None:
            if loaded.blob is None:  # erased (or never written): nothing to decide
                if partition is not None:
                    stale.append(cid)
                return None
            state = cached if cached is not None else CustomerState.loads(loaded.blob, loaded.outbox)
            prune_outbox(state, self.committed)  # what committed records caused is published: not kept again
            home = home_of(state)
            if partition is not None:
                if home is None:
                    state.home = home = partition  # written before homes were recorded: adopt the set it is in
                elif home != partition:
                    stale.append(cid)
                    return None
            elif owned is not None and home not in owned:
                return None  # another worker's customer
            if decided_after is not None and _entered_after(state, ranked, decided_after):
                return None  # what reads the population was decided since, with what this re-score brings
            when = at[cid]
            if partition is None and self.decision_limit is not None:
                if home is not None and home not in limits:
                    limits[home] = self.decision_limit(home)
                limit = None if home is None else limits[home]
                if limit is None:
                    return None  # its partition's time is not known yet (event time): not decided ahead of its records
                when = min(when, limit)
            moment = self.moments.get(cid, loaded.version, rules, state)
            result = reevaluate(rules, cid, state, when, cause, key, writer, moment, through, moving)
            return state, result, encode(state, loaded)

        stage = "timer" if partition is not None else "rules"
        with self.signature.held() as writer:
            _, records = await self._apply(list(at), fold, stats, rules, writer, stage=stage, timers=partition)
        if stale and partition is not None:
            await self.store.drop_timers(partition, stale)
        stats.published = len(records)
        return Prepared(stats, records)

    async def _apply(
        self,
        customer_ids: list[str],
        fold: Callable[[str, Loaded, str, CustomerState | None], Folded | None],
        stats: BatchStats,
        rules: RuleSet,
        writer: str,
        *,
        stage: str,
        failed: Callable[[str, BaseException], None] | None = None,
        timers: int | None = None,
    ) -> tuple[list[Output], list[OutRecord]]:
        """Fold every customer and write the states; retry customers that lost a race. Returns
        the outputs, customer by customer, and their records.

        An exception while folding or encoding one customer is that customer's alone: it is
        quarantined (counted, marked in the store, its timer taken off until an event for it
        applies), ``failed`` is told, and the rest of the batch goes on. ``timers``: the
        partition whose timer set the customers came from (their home, when their state
        cannot even be read)."""
        outputs: dict[str, list[Output]] = {}
        records: dict[str, list[OutRecord]] = {}  # of the outputs (a write made them: serialised once)
        outcomes: dict[tuple[str, str, str], int] = {}
        actions: dict[tuple[str, str], int] = {}
        changes: dict[tuple[str, str, str], int] = {}
        todo = list(customer_ids)
        # The first round folds the customers the cache holds from their cached rows, unread:
        # each of their writes names the document it started from and lands only where the store
        # still holds those very bytes (``Write.held``); the others, and every customer of a
        # later round (a lost write's), are loaded.
        unread, cached = self.cache.take(todo)  # taken out: each fold changes its own state in place
        for _ in range(MAX_CAS_ROUNDS):
            if not todo:
                break
            unloaded = [cid for cid in todo if cid not in unread]
            loaded = {**(await self.store.load(unloaded) if unloaded else {}), **unread}
            states: dict[str, CustomerState] = {}
            writes: list[Write] = []
            published: dict[str, Published] = {}  # what to tell the store once the outbox is published
            results: dict[str, FoldResult] = {}
            written: dict[str, list[OutRecord]] = {}
            moments: dict[str, tuple[int | None, Moment | None]] = {}  # last decision, next moment
            quarantined: list[Quarantine] = []
            for cid in todo:
                try:
                    folded = fold(cid, loaded[cid], writer, cached.get(cid))
                    if folded is None:
                        continue
                    state, result, blob = folded
                    if result.applied or result.duplicates or result.changes or result.reschedule:
                        write, published[cid], moment, written[cid] = customer_write(
                            cid, loaded[cid], state, blob, result, rules, writer, self.clock.now, self.reasons.codes
                        )
                        if cid in unread:
                            write.held = unread[cid].blob or b""
                        writes.append(write)
                        moments[cid] = (state.checked_at, moment)
                        states[cid] = state
                except Exception as exc:  # one customer's failure is contained to it
                    home = home_if_known(loaded[cid])
                    quarantined.append(Quarantine(cid, stage, timers if home is None else home))
                    # never the message: it may carry customer data
                    log.error("customer quarantined at %s: %s", stage, type(exc).__name__)
                    log.debug("customer %r quarantined at %s", cid, stage, exc_info=True)
                    if failed is not None:
                        failed(cid, exc)
                    continue
                results[cid] = result
            if quarantined:
                await self.store.quarantine(quarantined)
                for entry in quarantined:
                    self.metrics.quarantined.labels(entry.stage).inc()
            ok = dict(zip((w.customer_id for w in writes), await self.store.save(writes)))
            stats.outboxes += [published[w.customer_id] for w in writes if (w.outbox or w.erased) and ok[w.customer_id]]
            lost = {cid for cid, done in ok.items() if not done}
            for w in writes:
                if ok[w.customer_id]:
                    self.moments.put(w.customer_id, w.expected_version + 1, rules, *moments[w.customer_id])
                    if not w.erased:  # what a load would return now
                        row = Loaded(w.expected_version + 1, w.blob, w.outbox or None, None)
                        self.cache.put(w.customer_id, row, states[w.customer_id])
            for cid, result in results.items():
                if cid in lost:
                    continue
                outputs[cid] = result.outputs
                records[cid] = written[cid] if cid in written else list(map(out_record, result.outputs))
                stats.evaluated += 1
                stats.applied += result.applied
                stats.duplicates += result.duplicates
                stats.redelivered += result.redelivered
                stats.changes += len(result.changes)
                _add_counts(outcomes, result.outcomes)
                _add_counts(actions, result.actions)
                for d, old, new in result.changes:  # the same move may come twice
                    moved = (d, str(old), str(new))
                    changes[moved] = changes.get(moved, 0) + 1
            if lost:
                self.metrics.cas_conflicts.inc(len(lost))
                self.cache.refuted(sum(cid in unread for cid in lost))
            todo = [cid for cid in todo if cid in lost]
            unread, cached = {}, {}
        if todo:
            raise ConcurrentWriteError(f"{len(todo)} customers changed concurrently {MAX_CAS_ROUNDS} times in a row")
        for (name, outcome), n in actions.items():
            self.metrics.action(name, outcome, n)
        for labels, n in outcomes.items():
            self.metrics.events.labels(*labels).inc(n)
        for labels, n in changes.items():
            self.metrics.changes.labels(*labels).inc(n)
        return (
            [out for cid in customer_ids for out in outputs.get(cid, ())],
            [record for cid in customer_ids for record in records.get(cid, ())],
        )

    def _fold(
        self,
        rules: RuleSet,
        cid: str,
        events: list[Event],
        loaded: Loaded,
        rejects: list[Rejected],
        writer: str,
        cached: CustomerState | None = None,
    ) -> Folded:
        """Fold and encode; an event that makes pure code raise, or leaves a state that cannot
        be stored, is dead-lettered (with the code the error carries, else ``processing_error``)
        and the rest refolded (from ``loaded`` decoded: ``cached``, its state as decoded already,
        serves the first fold only, which changes it)."""
        while True:
            taken, cached = cached, None
            try:
                state, result = self._fold_events(rules, cid, events, loaded, writer, taken)
            except FoldError as exc:
                index, cause = exc.index, exc.cause
            else:
                try:
                    blob = encode(state, loaded)
                except Exception as exc:  # found below: the event after which the state cannot be stored
                    culprit = self._unstorable(rules, cid, events, loaded, writer)
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
            where = (bad.source.topic, bad.source.partition, bad.source.offset)
            log.error("event at %s:%d:%d failed in processing: %s", *where, type(cause).__name__)
            log.debug("processing failed on %s:%d:%d", *where, exc_info=cause)
            rejects.append(rejected(bad, code, message))
            events = events[:index] + events[index + 1 :]

    def _fold_events(
        self,
        rules: RuleSet,
        cid: str,
        events: list[Event],
        loaded: Loaded,
        writer: str,
        state: CustomerState | None = None,  # ``loaded`` decoded already (it is changed in place)
    ) -> tuple[CustomerState, FoldResult]:
        state = loaded_state(loaded) if state is None else state
        result = fold_customer(
            rules, state, cid, events,
            now_for=self.clock.now_for, committed=self.committed, dedupe_horizon_ms=self._dedupe_ms, writer=writer,
            moment=self.moments.get(cid, loaded.version, rules, state),
        )  # fmt: skip
        return state, result

    def _unstorable(self, rules: RuleSet, cid: str, events: list[Event], loaded: Loaded, writer: str) -> int | None:
        """The first event after which the folded state cannot be encoded (rare: refolds
        prefixes); None when the state as loaded cannot be."""
        try:
            encode(loaded_state(loaded), loaded)
        except Exception:  # the state as loaded cannot be stored
            return None
        for i in range(len(events)):
            try:
                encode(self._fold_events(rules, cid, events[: i + 1], loaded, writer)[0], loaded)
            except Exception:  # this event is the first that leaves an unstorable state
                return i
        return len(events) - 1


K = TypeVar("K")


def _add_counts(into: dict[K, int], counts: Mapping[K, int]) -> None:
    """``counts`` added to ``into`` (a plain loop: Counter.update is one in Python, run for
    every customer of a batch)."""
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


# A re-score decides again only the dimensions that read the population (or whose reads are not
# known): the customer's due moments are decided first (catch_up), so what else time moves is
# decided up to now, and only the sample changed since.
RESCORED: Final = frozenset({RANKED})


def _ranked_dimensions(rules: RuleSet) -> tuple[str, ...]:
    """The dimensions whose answer the population sample can move (or whose reads are not known)."""
    return tuple(d.name for d in rules.dimensions if d.moments is None or RANKED in d.moments)


def _entered_after(state: CustomerState, dimensions: tuple[str, ...], moment: int) -> bool:
    """Whether the customer entered its segment of each of ``dimensions`` after ``moment``.
    Staying in a segment keeps its entry time: a dimension decided again since, with no move,
    does not count (the re-score decides it again)."""
    since = state.member_since
    return all((since.get(name) or moment) > moment for name in dimensions)
