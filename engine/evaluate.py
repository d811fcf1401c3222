"""Pure: (rules, customer state, events) -> (new state, output records).

``fold_customer`` applies one customer's events of a batch in order; after each state
change it evaluates the rules and turns every membership that moved into a change
record for ``segments.changes`` and a snapshot for ``segments.members``. The records
also go into the state's outbox (``pending``), written to Redis atomically with the
state, so that a crash between that write and the Kafka acks loses nothing.

The outbox is signed by its writer (one ``BatchProcessor``, with a new name after any write
or publish of its own failed). Its own entries are published, in write order, before any
later write of it is; once that write is published the whole outbox is dropped. An outbox
another writer left (a crash, a rebalance, a failed step) is not known published: the next
decision of the customer sends every entry in it again first (same ``change_id``), before
anything it decides, and keeps them until it is published itself. Entries whose input record
is committed are published: they are dropped on load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from .actions import Decided, Trigger, due_delayed, grace_trigger_id, on_trigger
from .aggregates import fold_all
from .errors import ProcessingError
from .events import Event, Source
from .folding import already_applied, apply
from .records import Output, TopicPartition, topic_partition
from .rules import RuleSet
from .state import DAY_MS, CustomerState, Features
from .timers import NOTHING_QUIET, Moment, next_moment
from .topic_names import CHANGES_TOPIC, MEMBERS_TOPIC

NowFn = Callable[[int], int]  # event ts (ms) -> the decision's "now" (ms)
NONE_SELECTED: Final[dict[str, int]] = {}  # never written to: a FoldResult's before its first decision


class FoldResult:
    """What folding one customer gave (a plain class: see ``segengine.rules.ruleset.Decision``)."""

    __slots__ = (
        "actions",
        "applied",
        "changes",
        "decided_at",
        "duplicates",
        "erased",
        "features",
        "outcomes",
        "outputs",
        "population",
        "redelivered",
        "reschedule",
        "resent",
        "selected",
        "stamps",
    )

    def __init__(self) -> None:
        self.outputs: list[Output] = []  # outbox re-sends, then new records, in order
        self.resent = 0  # how many of ``outputs``, at the start, are re-sends of an outbox
        self.applied = 0
        self.duplicates = 0
        self.redelivered = 0
        self.population: dict[tuple[str, str], int] = {}  # (dimension, segment) -> delta
        self.changes: list[tuple[str, str | None, str | None]] = []
        self.outcomes: dict[tuple[str, str, str], int] = {}  # (topic, type, outcome) -> n
        self.reschedule = False  # write even without a change: the timer must move on
        self.decided_at: int | None = None  # the time of the last decision (next checks come after it)
        self.actions: dict[tuple[str, str], int] = {}  # (action, outcome) -> n
        self.erased = False  # an erase was applied: the store deletes the customer's keys once it is committed
        self.features: Features | None = None  # those of the last decision, of the state as it is now
        # its dimensions that stayed, or (Dimension.settles) moved or were passed over: the segment that held
        self.selected: dict[str, int] = NONE_SELECTED
        self.stamps: dict[str, int] = {}  # the times its change records carry (``at``) -> epoch ms (``stamp``)

    def count(self, event: Event, outcome: str) -> None:
        key = (event.source.topic, event.type, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


class FoldError(ProcessingError):
    """Pure code raised on one event: that event is dead-lettered, the rest refolded."""

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(f"event #{index} failed: {cause!r}")
        self.index = index
        self.cause = cause


def _event_cause(kind: str, event: Event) -> dict[str, Any]:
    """The ``cause`` of a change an input record decided (``kind``: event or erase)."""
    src = event.source
    where = {"topic": src.topic, "partition": src.partition, "offset": src.offset}
    return {"kind": kind, "event_id": event.event_id, **where}


def _cause_key(src: Source) -> str:
    """An input record as part of a change_id (the same record, replayed, yields the same ids)."""
    return f"{src.topic}:{src.partition}:{src.offset}"


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as an RFC 3339 UTC time with milliseconds ("2024-05-01T12:00:00.000Z")."""
    if 0 <= ms < EXACT_MS:  # whole-number calendar arithmetic: what datetime gives, in a fifth of the time
        days, rest = divmod(ms, DAY_MS)
        year, month, day = civil_from_days(days)
        second, milli = divmod(rest, 1000)
        two = TWO_DIGITS
        return "".join(
            (two[year // 100], two[year % 100], "-", two[month], "-", two[day], "T", two[second // 3600], ":",
             two[second // 60 % 60], ":", two[second % 60], ".", THREE_DIGITS[milli], "Z")
        )  # fmt: skip
    return rfc3339_datetime(ms)


def stamp(ms: int, result: FoldResult) -> str:
    """``rfc3339(ms)``, the time a change record carries, kept in ``result.stamps`` with its
    milliseconds where ``rfc3339_ms`` reads them back exactly (segengine.writes reads it there
    instead of parsing it again)."""
    at = rfc3339(ms)
    if 0 <= ms < EXACT_MS:
        result.stamps[at] = ms
    return at


def rfc3339_datetime(ms: int) -> str:
    """``rfc3339`` by datetime, as it was first written (through a float of seconds: beyond
    ``EXACT_MS`` that float is coarser than a microsecond, and what it gives is kept as it was)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Below 2**33 s (the year 2242) a float of seconds is within half a microsecond of every
# millisecond, so datetime's rounding to the microsecond gives the millisecond exactly: the
# calendar arithmetic and ``rfc3339_datetime`` agree on every time from 1970 up to here.
EXACT_MS = 2**33 * 1000
TWO_DIGITS: Final = tuple(f"{n:02d}" for n in range(100))  # looked up: faster than formatting, compiled or not
THREE_DIGITS: Final = tuple(f"{n:03d}" for n in range(1000))


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of the day ``days`` after 1970-01-01, proleptic Gregorian (the
    civil_from_days algorithm of H. Hinnant's date library: 400-year eras, years from March)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097  # day of the era, 0..146096
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365  # year of the era, 0..399
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)  # day of the year from March 1st, 0..365
    mp = (5 * doy + 2) // 153  # month from March, 0..11
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, doy - (153 * mp + 2) // 5 + 1


def days_from_civil(year: int, month: int, day: int) -> int:
    """The inverse of ``civil_from_days`` (for a valid date)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    return era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468


def rfc3339_ms(at: str) -> int | None:
    """The epoch milliseconds of ``at`` if ``rfc3339`` gives exactly ``at`` for them, else None
    (whatever ``int`` reads that is not ASCII digits, ``rfc3339`` does not give back)."""
    if len(at) != 24:
        return None
    try:
        days = days_from_civil(int(at[0:4]), int(at[5:7]), int(at[8:10]))
        ms = ((int(at[11:13]) * 60 + int(at[14:16])) * 60 + int(at[17:19])) * 1000 + int(at[20:23])
    except ValueError:
        return None
    ms += days * DAY_MS
    return ms if 0 <= ms < EXACT_MS and rfc3339(ms) == at else None


_CHANGE_ID: Final = hashlib.blake2b(digest_size=16)  # copied for each id: cheaper than a new one from its parameters


def change_id(customer_id: str, dimension: str, cause_key: str, old: str | None, new: str | None) -> str:
    """Deterministic: the same decision, replayed, yields the same id (BLAKE2b, 16 bytes)."""
    digest = _CHANGE_ID.copy()
    digest.update(f"{customer_id}\x1f{dimension}\x1f{cause_key}\x1f{old}\x1f{new}".encode())
    return digest.hexdigest()


def prune_outbox(state: CustomerState, committed: Mapping[TopicPartition, int]) -> None:
    """Drop outbox entries whose input record is committed (so they were published)."""
    if state.pending:
        state.pending = [p for p in state.pending if p.cause is None or (p.offset or 0) >= committed.get(p.cause, 0)]


def resend_unknown(state: CustomerState, writer: str | None, result: FoldResult) -> None:
    """An outbox ``writer`` did not write is not known published: every entry goes out again,
    first (it was decided before anything now), and stays in the outbox, now ``writer``'s."""
    if state.pending and state.outbox_writer != writer:
        result.outputs.extend(state.pending)
        result.resent = len(state.pending)
    state.outbox_writer = writer


def fold_customer(
    rules: RuleSet,
    state: CustomerState,
    customer_id: str,
    events: Sequence[Event],
    *,
    now_for: NowFn,
    committed: Mapping[TopicPartition, int],
    dedupe_horizon_ms: int,
    writer: str | None = None,
    moment: Moment | None = None,
) -> FoldResult:
    """Apply ``events`` (one customer's, in offset order) to ``state`` in place, for ``writer``
    (the signature its outbox is written with; None for one that never stores it).
    ``moment``: the state's next moment after its last decision, when known (``catch_up``)."""
    result = FoldResult()
    prune_outbox(state, committed)
    resend_unknown(state, writer, result)
    for index, event in enumerate(events):
        try:
            if _fold_one(rules, state, customer_id, event, now_for, dedupe_horizon_ms, result, moment):
                moment = None  # the state moved on
        except Exception as exc:  # any bug in pure code: dead-letter this event
            raise FoldError(index, exc) from exc
    return result


def _fold_one(
    rules: RuleSet,
    state: CustomerState,
    customer_id: str,
    event: Event,
    now_for: NowFn,
    dedupe_horizon_ms: int,
    result: FoldResult,
    moment: Moment | None = None,
) -> bool:
    """Fold one event in; False when it changed nothing (delivered again)."""
    src = event.source
    tp = topic_partition(src.topic, src.partition)
    if already_applied(state, event):
        # Delivered again (a crash, a rebalance): change nothing. What it caused is published,
        # or in an outbox this fold sends again (resend_unknown).
        result.redelivered += 1
        result.count(event, "redelivered")
        return False
    try:
        caught_up, _ = catch_up(rules, state, customer_id, now_for(event.ts), result, moment=moment)
    except Exception:
        if event.type != "erase":
            raise
        caught_up = []  # an erase goes through whatever the state holds: the customer is forgotten anyway
    for out in caught_up:
        out = out.caused_by(tp, src.offset)  # caused by processing this record: its outbox
        state.pending.append(out)
        result.outputs.append(out)
    if event.type == "erase":
        erase_customer(rules, state, customer_id, event, now_for, dedupe_horizon_ms, result)
        return True
    if state.home is None:
        state.home = src.partition  # its timers live with this partition, whose owner fires them
    if not _apply(rules, state, event, dedupe_horizon_ms, result):
        return True
    result.features = None  # the state moved on: the next decision's features
    if rules.aggregates or state.aggs:
        fold_all(rules.aggregates, rules.aggregates_by_type, state, event)
    result.applied += 1
    result.count(event, "applied")
    # never decide before what the customer did, nor before the customer's last decision
    now = max(now_for(event.ts), state.max_ts or 0, state.checked_at or 0)
    result.decided_at = now
    cause = _event_cause("event", event)
    outputs = decide(rules, state, customer_id, now, cause, _cause_key(src), result, event.type)
    for out in outputs:
        out = out.caused_by(tp, src.offset)
        state.pending.append(out)
        result.outputs.append(out)
    return True


def _apply(rules: RuleSet, state: CustomerState, event: Event, dedupe_horizon_ms: int, result: FoldResult) -> bool:
    """Fold the event in, keeping only the window detail the rules read; False (counted) for
    an ``event_id`` seen within the dedupe horizon."""
    plan = rules.time_plan
    if apply(
        state, event, dedupe_horizon_ms=dedupe_horizon_ms,
        keep_purchases=bool(plan.purchase_windows), keep_browse=bool(plan.browse_windows),
        keep_complaints=plan.complaints,
    ):  # fmt: skip
        return True
    result.duplicates += 1
    result.count(event, "duplicate")
    return False


MAX_CATCH_UP = 64  # timer decisions taken before one decision, at most (then the due loop goes on)


def catch_up(
    rules: RuleSet,
    state: CustomerState,
    customer_id: str,
    until: int,
    result: FoldResult,
    *,
    before: bool = False,
    moment: Moment | None = None,
) -> tuple[list[Output], frozenset[str] | None]:
    """Timers that fell due by ``until`` (``before``: strictly before it) are decided first, at
    their due times, as the due loop would have (same ``change_id``): whatever decides a
    customer next (an event, a rules switch, a population re-score) decides it after every
    transition that time alone made up to then, so decisions stay in time order. Returns the
    records, and what moves at ``until`` if the customer's next moment is ``until`` itself
    (else None). ``moment``: ``next_moment`` after the state's last decision, when the caller
    knows it (what the last write worked out, for the state as written), not worked out again."""
    outputs: list[Output] = []
    if state.checked_at is None or rules.time_plan.empty:
        return outputs, None
    for _ in range(MAX_CATCH_UP):
        due, moving = moment if moment is not None else next_moment(rules.time_plan, state, state.checked_at)
        moment = None
        if due is None or due > until or (before and due == until):
            return outputs, moving if due == until else None
        outputs += decide(rules, state, customer_id, due, {"kind": "timer"}, f"timer:{due}", result, "timer", moving)
    return outputs, None


LOOKAHEAD = 2  # moments past a state's next one tried for the first that decides anything


def quiet_moves(
    rules: RuleSet,
    state: CustomerState,
    now: int,
    known: Features | None = None,
    selected: Mapping[str, int] = NONE_SELECTED,
) -> frozenset[str]:
    """The window moves that cannot change any of the customer's answers until its state
    changes, as decided at ``now`` (its last decision): every dimension that reads one is
    in the segment that holds first (no hold running), and that segment's conditions, and
    those of the segments before it, cannot move that way as windows empty
    (segengine.rules.quiet). ``next_moment`` leaves their moves out: a customer in
    ``intent: cold`` gets no timer for each browse bucket leaving a window. ``known``: the
    features of the decision at ``now`` (``FoldResult.features``), read again where they are
    of this state at that time, with the segment that held in each dimension it left as it
    was and, for those whose answer depends on their features alone (``Dimension.settles``),
    in each it moved or passed over (``selected``): not selected again."""
    candidates = rules.quiet_candidates
    if not candidates:
        return candidates
    if known is not None and known.state is state and known.now == now:
        features = known
    else:
        features, selected = Features(state, now, rules.derived), NONE_SELECTED
    members, grace = state.members, state.grace_since
    loud: set[str] = set()
    settled = rules.time_plan.idle(state)  # moves that cannot come (quiet), then those found loud too
    for dim, kinds in rules.quiet_watch:  # each dimension that reads a candidate, and the ones it reads
        sensitive = dim.sensitive
        if sensitive is None or kinds <= settled:  # nothing it could tell
            continue
        index = selected.get(dim.name)
        if index is None:
            current = members.get(dim.name)
            index, _ = dim.select(features, current, now)
            if dim.outcomes[index] != current or dim.name in grace:  # moving, or held back
                loud.update(kinds)
                settled.update(kinds)
                continue
        loud.update(sensitive[index])
        settled.update(sensitive[index])
    return candidates.difference(loud)


def deciding_moment(
    rules: RuleSet, state: CustomerState, customer_id: str, moment: Moment, quiet: frozenset[str] = NOTHING_QUIET
) -> Moment:
    """The first of the state's coming moments, from ``moment`` (its next one after its last
    decision), at which a decision would publish something or keep anything but its time (at
    most LOOKAHEAD tried, then the one after them): what its timer is set for. ``state`` is
    left as it was.

    A moment before it decides nothing: fired, its timer would load, decide and write the
    customer for the decision's time alone. Whatever decides the customer next decides the
    same without them: a decision reads no earlier decision time (``decide`` takes its own),
    an event before that moment is decided at its own time either way, and from the moment
    on, what time alone changes is decided as before, each moment with its own ``timer:<due>``
    id (``catch_up`` from the last decision, or from this moment when it is known). A new
    population sample or rules version drops what is known (segengine.writes.Moments) and
    the moments are worked out again from the last decision."""
    due, moving = moment
    if due is None or state.checked_at is None or state.delayed:
        return moment
    checked_at, members, since, grace = state.checked_at, state.members, state.member_since, state.grace_since
    sent = state.actions_sent
    state.members, state.member_since, state.grace_since = dict(members), dict(since), dict(grace)
    state.actions_sent = dict(sent)
    try:
        for _ in range(LOOKAHEAD):
            # a membership that moves always publishes its change; a grace period or an action can move alone
            moves = decide(rules, state, customer_id, due, TIMER_CAUSE, TIMER_KEY, FoldResult(), "timer", moving, True)
            if moves or state.grace_since != grace or state.actions_sent != sent or state.delayed:
                return due, moving
            due, moving = next_moment(rules.time_plan, state, due, quiet)
            if due is None:
                break
        return due, moving
    finally:
        state.checked_at, state.members, state.member_since, state.grace_since = checked_at, members, since, grace
        state.actions_sent = sent
        if state.delayed:
            state.delayed = []


TIMER_CAUSE: Final = {"kind": "timer"}
TIMER_KEY: Final = "timer"  # what a change id of a decision that is not kept is made from


def reevaluate_customer(
    rules: RuleSet,
    state: CustomerState,
    customer_id: str,
    now: int,
    result: FoldResult,
    cause: dict[str, Any],
    cause_key: str,
    writer: str | None = None,
    moment: Moment | None = None,
    moving: frozenset[str] | None = None,
) -> None:
    """Every dimension, with no event: after a rules switch (``cause.kind = rules``), a
    population re-score, or when a timer is due (``timer``, ``cause_key`` ``timer:<due>``).
    Dimensions the rules no longer have are left. An outbox another writer left is sent again
    first (``resend_unknown``). ``moving`` (not a timer's): what moved, when only the
    dimensions reading it can have another answer now (a re-score: ``RESCORED``).

    The customer's timers due by ``now`` are decided first, each at its due time and with
    its own ``timer:<due>`` id (a timer due at ``now`` too, unless this is that timer). A
    timer whose time the customer's decisions have already passed (a stale entry) decides
    nothing: its moment was decided when they passed it."""
    resend_unknown(state, writer, result)
    result.reschedule = True
    timer = cause_key.startswith("timer:")
    if timer and state.checked_at is not None and now <= state.checked_at:
        return
    only = "timer" if cause["kind"] == "timer" else None  # a timer re-evaluates the dimensions time can change
    caught_up, at_now = catch_up(rules, state, customer_id, now, result, before=timer, moment=moment)
    if timer:
        moving = at_now  # a timer's own moment: only the dimensions reading what moves then
    for out in [*caught_up, *decide(rules, state, customer_id, now, cause, cause_key, result, only, moving)]:
        state.pending.append(out)
        result.outputs.append(out)


def decide(
    rules: RuleSet,
    state: CustomerState,
    customer_id: str,
    now: int,
    cause: dict[str, Any],
    cause_key: str,
    result: FoldResult,
    event_type: str | None = None,
    moving: frozenset[str] | None = None,
    probe: bool = False,
) -> list[Output]:
    """Evaluate the dimensions (after an event, only those whose inputs it can change, and
    those the customer is not in yet; at a timer's moment, ``moving`` what moves then, only
    those reading it); update ``state.members``; return the records to publish."""
    features = Features(state, now, rules.derived)
    selected: dict[str, int] = {}
    state.checked_at = now if state.checked_at is None else max(state.checked_at, now)
    members = state.members
    since = state.member_since
    grace = state.grace_since
    outputs: list[Output] = []
    at = ""
    for dim in rules.dimensions:
        dimension = dim.name
        old = members.get(dimension)
        if (
            event_type is not None
            and (old is not None or dimension in grace)
            and (
                event_type not in dim.triggers
                or (moving is not None and dim.moments is not None and dim.moments.isdisjoint(moving))
            )
        ):  # nothing it reads changed (an event), or moves at this moment (a timer): passed over
            if dim.settles and dimension not in grace:
                settled = dim.settled_index(old)
                if settled is not None:
                    selected[dimension] = settled  # what quiet_moves would select again
            continue
        index, values = dim.select(features, old, now)
        if dim.outcomes[index] == old:
            if dimension in grace:  # stay holds again
                del grace[dimension]
            selected[dimension] = index
            continue
        move = dim.resolve(index, values, old, now, since.get(dimension), grace.get(dimension))
        if move.grace_started is not None and dimension not in grace and old is not None and rules.actions:
            trigger = Trigger(grace_trigger_id(customer_id, dimension, old, move.grace_started), dimension, old, now)
            graced = [a for a in rules.actions if a.matches_grace(dimension, old)]
            _actions(
                on_trigger(rules.actions, state, customer_id, features, trigger, graced, rfc3339),
                customer_id,
                outputs,
                result,
            )
        if move.grace_started is not None:
            grace[dimension] = move.grace_started
        elif dimension in grace:
            del grace[dimension]
        new = move.segment
        if new == old:
            continue
        if probe:  # only whether a membership moves (deciding_moment): the state is thrown away
            return [Output(CHANGES_TOPIC, customer_id, None)]
        if dim.settles:  # no hold: it moved to the segment that holds first, whatever it was in
            selected[dimension] = index
        decision = dim.explain(move)
        if new is None:
            del members[dimension]
            since.pop(dimension, None)
        else:
            members[dimension] = new
            since[dimension] = now
        if old is not None:
            result.population[(dimension, old)] = result.population.get((dimension, old), 0) - 1
        if new is not None:
            result.population[(dimension, new)] = result.population.get((dimension, new), 0) + 1
        result.changes.append((dimension, old, new))
        at = at or stamp(now, result)
        cid = change_id(customer_id, dimension, cause_key, old, new)
        outputs.append(
            Output(
                CHANGES_TOPIC,
                customer_id,
                {
                    "change_id": cid,
                    "customer_id": customer_id,
                    "dimension": dimension,
                    "from": old,
                    "to": new,
                    "at": at,
                    "rules_version": rules.version,
                    "reason": decision.reason,
                    "cause": cause,
                    "features": decision.read,
                },
            )
        )
        if rules.actions:
            matching = rules.actions_for(dimension, old, new)
            if matching:
                decided = on_trigger(
                    rules.actions, state, customer_id, features, Trigger(cid, dimension, new, now), matching, rfc3339
                )
                _actions(decided, customer_id, outputs, result)
    if state.delayed:
        _actions(
            due_delayed(rules.actions_by_name, state, customer_id, features, now, rfc3339), customer_id, outputs, result
        )
    if not probe:
        result.features, result.selected = features, selected
    if any(o.topic == CHANGES_TOPIC for o in outputs):
        snapshot: dict[str, Any] = {
            "customer_id": customer_id,
            "memberships": dict(state.members),
            "rules_version": rules.version,
            "updated_at": at,
        }
        outputs.append(Output(MEMBERS_TOPIC, customer_id, snapshot))
    return outputs


def _actions(decided: Decided, customer_id: str, outputs: list[Output], result: FoldResult) -> None:
    outputs.extend(Output(topic, customer_id, value) for topic, value in decided.records)
    for outcome in decided.outcomes:
        result.actions[outcome] = result.actions.get(outcome, 0) + 1


def erase_customer(
    rules: RuleSet,
    state: CustomerState,
    customer_id: str,
    event: Event,
    now_for: NowFn,
    dedupe_horizon_ms: int,
    result: FoldResult,
) -> None:
    """An erase: an exit (``to: null``, ``cause.kind = erase``) from every membership, a
    tombstone for ``segments.members``, and the state forgotten (``state._apply_erase``). The
    records go to the outbox like any other, so they are published again, with the same
    ``change_id``, if the erase is delivered again before it is committed."""
    src = event.source
    tp = topic_partition(src.topic, src.partition)
    members = dict(state.members)
    now = max(now_for(event.ts), state.max_ts or 0, state.checked_at or 0)
    home = state.home
    if not _apply(rules, state, event, dedupe_horizon_ms, result):
        return
    state.home = home  # its timer entry is removed from that partition's set
    result.features = None
    result.applied += 1
    result.count(event, "applied")
    result.erased = True
    result.decided_at = now
    at = stamp(now, result)
    cause = _event_cause("erase", event)
    outputs = []
    for dimension, old in members.items():
        result.population[(dimension, old)] = result.population.get((dimension, old), 0) - 1
        result.changes.append((dimension, old, None))
        change = {
            "change_id": change_id(customer_id, dimension, _cause_key(src), old, None),
            "customer_id": customer_id, "dimension": dimension, "from": old, "to": None, "at": at,
            "rules_version": rules.version, "reason": "erase", "cause": cause, "features": {},
        }  # fmt: skip
        outputs.append(Output(CHANGES_TOPIC, customer_id, change, tp, src.offset))
    outputs.append(Output(MEMBERS_TOPIC, customer_id, None, tp, src.offset))  # the compacted table's tombstone
    for out in outputs:
        state.pending.append(out)
        result.outputs.append(out)
