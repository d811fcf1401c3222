"""A decision no record would send again (a timer's, held in the outbox after a crash) is sent
again in decision order, pure (no I/O): after the re-sends of the records it came after, before
the decisions of new records, and never twice."""

from __future__ import annotations

from pathlib import Path

from segengine.evaluate import CHANGES_TOPIC, FoldResult, fold_customer, reevaluate_customer
from segengine.events import Event, Source
from segengine.rules import parse_rules
from segengine.state import DAY_MS, CustomerState

ROOT = Path(__file__).resolve().parents[2]
RULES = parse_rules(
    "name: t\ndimensions:\n" + (ROOT / "rules" / "lifecycle.yaml").read_text().split("dimensions:\n", 1)[1]
)
T0 = 1_600_000_000_000


def purchase(offset: int, ts: int) -> Event:
    return Event(
        f"p{offset}",
        "c1",
        "purchase",
        ts,
        {"amount": 20.0, "order_id": f"o{offset}"},
        Source("events.purchase", 2, offset),
    )


def fold(state: CustomerState, *events: Event) -> FoldResult:
    return fold_customer(
        RULES, state, "c1", list(events), now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=DAY_MS
    )


def moves(result: FoldResult) -> list[tuple[object, object]]:
    return [(o.value["from"], o.value["to"]) for o in result.outputs if o.topic == CHANGES_TOPIC and o.value]


def crashed_after_a_timer() -> CustomerState:
    """A first purchase (None -> new), then the due timer's new -> active written but, the
    worker killed, neither published nor the purchase committed: both are in the outbox."""
    state = CustomerState()
    assert moves(fold(state, purchase(5, T0))) == [(None, "new")]
    timer = FoldResult()
    reevaluate_customer(RULES, state, "c1", T0 + 31 * DAY_MS, timer, {"kind": "timer"}, f"timer:{T0 + 31 * DAY_MS}")
    assert moves(timer) == [("new", "active")]
    return CustomerState.loads(state.dumps(), state.dumps_outbox())  # as stored


def test_a_redelivered_record_resends_its_changes_before_the_held_timer_decision() -> None:
    state = crashed_after_a_timer()
    again = fold(state, purchase(5, T0))  # the purchase comes again (it was never committed)
    assert again.redelivered == 1
    assert moves(again) == [(None, "new"), ("new", "active")]  # in decision order, each once
    assert moves(fold(state, purchase(5, T0))) == [(None, "new"), ("new", "active")]  # and again, still so


def test_a_new_record_sends_the_held_decision_before_its_own() -> None:
    state = crashed_after_a_timer()
    result = fold(state, purchase(6, T0 + 32 * DAY_MS))
    assert moves(result)[0] == ("new", "active")
    assert len([m for m in moves(result) if m == ("new", "active")]) == 1
