"""The pure fold: what the engine should publish for a stream of events in event-clock
mode, computed without Kafka or Redis.

Each customer's events are folded in event-time order with ``fold_customer`` (as they
were decided live: each at its own event time). Before each event, and at the end up to
``until`` (the last event time, where the engine's due loop stops in event-clock mode),
the customer's due timers are decided at their due times, one after the other, as the
due loop and ``_catch_up`` decide them (``cause.kind = timer``, cause key ``timer:<due>``),
with no cap on how many. Population-ranked features see no population sample here:
assert on the dimensions that do not read them.

Change ids name the input record (topic, partition, offset) that caused them, so the
events are built from the input records as the broker stored them (``events_from_records``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from segengine.evaluate import CHANGES_TOPIC, FoldResult, decide, fold_customer
from segengine.events import Event, Rejected
from segengine.rules import RuleSet
from segengine.state import CustomerState
from segengine.timers import next_check
from segengine.validate import validate

DEDUPE_HORIZON_MS = 7 * 86_400_000


@dataclass(slots=True)
class Folded:
    """One customer as the pure fold leaves it: its change records in decision order, its state."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    state: CustomerState = field(default_factory=CustomerState)

    def memberships(self, dimensions: Iterable[str]) -> dict[str, str | None]:
        return {d: self.state.members.get(d) for d in dimensions}


def events_from_records(records: Iterable[Any]) -> dict[str, list[Event]]:
    """Valid events per customer, from consumed input records (topic, partition, offset, key, value)."""
    by_customer: dict[str, list[Event]] = defaultdict(list)
    for rec in records:
        result = validate(
            rec.topic, rec.partition, rec.offset, rec.key, rec.value, now_ms=2**62, max_bytes=1 << 20, future_skew_ms=0
        )
        assert not isinstance(result, Rejected), f"the test produced an invalid event: {result}"
        by_customer[result.customer_id].append(result)
    return by_customer


def _decide_due(rules: RuleSet, state: CustomerState, customer_id: str, until: int, result: FoldResult) -> None:
    """Every timer of the customer due at or before ``until``, at its due time, earliest first."""
    if rules.time_plan.empty:
        return
    while state.checked_at is not None:
        due = next_check(rules.time_plan, state, state.checked_at)
        if due is None or due > until:
            return
        result.outputs.extend(
            decide(rules, state, customer_id, due, {"kind": "timer"}, f"timer:{due}", result, "timer")
        )


def fold(rules: RuleSet, customer_id: str, events: Iterable[Event], until: int) -> Folded:
    """One customer's events, in event-time order (ties: the order the engine reads them in)."""
    folded = Folded()
    state = folded.state
    result = FoldResult()
    for event in sorted(events, key=lambda e: (e.ts, e.source.topic, e.source.partition, e.source.offset)):
        _decide_due(rules, state, customer_id, event.ts, result)
        step = fold_customer(
            rules, state, customer_id, [event], now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=DEDUPE_HORIZON_MS
        )
        result.outputs.extend(step.outputs)
        state.pending.clear()  # the outbox: nothing here is ever published twice
    _decide_due(rules, state, customer_id, until, result)
    folded.changes = [o.value for o in result.outputs if o.topic == CHANGES_TOPIC and o.value is not None]
    return folded


def fold_all(rules: RuleSet, by_customer: Mapping[str, Iterable[Event]], until: int) -> dict[str, Folded]:
    return {cid: fold(rules, cid, events, until) for cid, events in by_customer.items()}


def last_event_time(by_customer: Mapping[str, Iterable[Event]]) -> int:
    return max(e.ts for events in by_customer.values() for e in events)
