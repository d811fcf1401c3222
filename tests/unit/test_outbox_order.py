"""The outbox after a crash, pure (no I/O). An outbox another writer left (the worker that
wrote it died before its publish) is sent again whole, first, by whatever decides the
customer next: the record delivered again, a new record, a due timer. Each entry once, in
decision order, before anything new. The writer that wrote it knows it published, and sends
nothing again."""

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
CRASHED, RESTARTED = "crashed-worker", "restarted-worker"


def purchase(offset: int, ts: int) -> Event:
    return Event(
        f"p{offset}",
        "c1",
        "purchase",
        ts,
        {"amount": 20.0, "order_id": f"o{offset}"},
        Source("events.purchase", 2, offset),
    )


def fold(state: CustomerState, *events: Event, writer: str = RESTARTED) -> FoldResult:
    return fold_customer(
        RULES, state, "c1", list(events), now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=DAY_MS, writer=writer
    )


def timer(state: CustomerState, at: int, writer: str = RESTARTED) -> FoldResult:
    result = FoldResult()
    reevaluate_customer(RULES, state, "c1", at, result, {"kind": "timer"}, f"timer:{at}", writer)
    return result


def moves(result: FoldResult) -> list[tuple[object, object]]:
    return [(o.value["from"], o.value["to"]) for o in result.outputs if o.topic == CHANGES_TOPIC and o.value]


def stored(state: CustomerState) -> CustomerState:
    return CustomerState.loads(state.dumps(), state.dumps_outbox(CRASHED))


def crashed_after_a_timer() -> CustomerState:
    """A first purchase (None -> new), then the due timer's new -> active written but, the
    worker killed, neither published nor the purchase committed: both are in the outbox."""
    state = CustomerState()
    assert moves(fold(state, purchase(5, T0), writer=CRASHED)) == [(None, "new")]
    assert moves(timer(state, T0 + 31 * DAY_MS, writer=CRASHED)) == [("new", "active")]
    return stored(state)


def crashed_after_a_purchase() -> CustomerState:
    """A first purchase written, the worker killed before its publish: in the outbox."""
    state = CustomerState()
    assert moves(fold(state, purchase(5, T0), writer=CRASHED)) == [(None, "new")]
    return stored(state)


def test_a_redelivered_record_resends_the_outbox_in_decision_order() -> None:
    state = crashed_after_a_timer()
    held = len(state.pending)  # the changes and the membership snapshots
    again = fold(state, purchase(5, T0))  # the purchase comes again (it was never committed)
    assert again.redelivered == 1 and again.resent == held and again.outputs == state.pending
    assert moves(again) == [(None, "new"), ("new", "active")]  # in decision order, each once
    # Written by the restarted worker, and published by it: it sends nothing again ...
    assert moves(fold(state, purchase(5, T0))) == []
    # ... but a worker after it that finds the outbox does, the same again.
    assert moves(fold(state, purchase(5, T0), writer="third-worker")) == [(None, "new"), ("new", "active")]


def test_a_new_record_sends_the_held_decisions_before_its_own() -> None:
    state = crashed_after_a_timer()
    held = list(state.pending)
    result = fold(state, purchase(6, T0 + 32 * DAY_MS))
    assert (
        result.outputs[: len(held)] == held
        and result.resent == len(held)
        and moves(result)[:2] == [(None, "new"), ("new", "active")]
    )
    assert moves(result).count(("new", "active")) == 1 and moves(result).count((None, "new")) == 1


def test_a_timer_before_the_redelivery_sends_the_record_s_changes_first() -> None:
    """The restarted worker's due loop reaches the customer before the purchase comes again:
    the purchase's changes go out first; its redelivery then sends nothing more."""
    state = crashed_after_a_purchase()
    held = list(state.pending)
    due = timer(state, T0 + 31 * DAY_MS)
    assert moves(due) == [(None, "new"), ("new", "active")] and due.outputs[: len(held)] == held
    assert state.pending[: len(held)] == held  # kept until this write is published
    assert all(p.offset == 5 for p in held) and all(p.cause is None for p in state.pending[len(held) :])
    assert moves(fold(state, purchase(5, T0))) == []


def test_the_writer_that_wrote_the_outbox_sends_nothing_again() -> None:
    state = CustomerState()
    fold(state, purchase(5, T0), writer=CRASHED)
    assert moves(timer(state, T0 + 31 * DAY_MS, writer=CRASHED)) == [("new", "active")]
    assert fold(state, purchase(5, T0), writer=CRASHED).outputs == []
