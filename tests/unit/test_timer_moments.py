"""A timer's moment decides only the dimensions reading what moves then, pure (no I/O): what each
shipped dimension is decided again for, and the same records, to the byte, as deciding every
time-dependent dimension at every moment."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from segengine.evaluate import FoldResult, fold_customer, reevaluate_customer
from segengine.events import Event, Source
from segengine.rules import RuleSet, load_rules, parse_rules
from segengine.state import DAY_MS, HOUR_MS, CustomerState
from segengine.timers import (
    AGE,
    AGGREGATE_WINDOW,
    BROWSE_WINDOW,
    COMPLAINTS,
    HOLD,
    PREDICTED_MOVE,
    PURCHASE_WINDOW,
    move,
)

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules(REPO / "rules")
# the same rules with every time-dependent dimension decided at every moment, as before
EVERY_MOMENT = dataclasses.replace(
    RULES, dimensions=tuple(dataclasses.replace(d, moments=None) for d in RULES.dimensions)
)
T0 = 1_700_000_000_000
TOPIC = {"purchase": "events.purchase", "browse": "events.browse", "feedback": "events.feedback"}


def moments_of(rules: RuleSet) -> dict[str, frozenset[str] | None]:
    return {d.name: d.moments for d in rules.dimensions}


def test_each_shipped_dimension_is_decided_again_for_what_it_reads() -> None:
    moments = moments_of(RULES)
    assert moments["value_tier"] == {move(PURCHASE_WINDOW, 365)}
    assert moments["lifecycle"] == {AGE}
    assert moments["intent"] == {move(BROWSE_WINDOW, 24), move(BROWSE_WINDOW, 7 * 24)}
    assert moments["complaint"] == {COMPLAINTS}
    assert moments["value_outlook"] == {PREDICTED_MOVE}
    assert moments["category_affinity"] == {
        move(AGGREGATE_WINDOW, "top_category_90d"),
        move(AGGREGATE_WINDOW, "categories_browsed_30d"),
    }
    assert moments["loyalty"] == {move(PURCHASE_WINDOW, 365), move(HOLD, "loyalty")}
    assert moments["satisfaction"] == frozenset()  # time moves nothing it reads


def test_a_hold_and_an_unnamed_time_dependency() -> None:
    rules = parse_rules(
        """
name: t
dimensions:
  d:
    segments:
      - {name: hot, when: "spend_30d > 10", exit_grace: 3d}
    default: cold
  e:
    segments:
      - {name: old, when: "days_since_first_seen > 5"}
    default: young
"""
    )
    moments = moments_of(rules)
    assert moments["d"] == {move(PURCHASE_WINDOW, 30), move(HOLD, "d")}
    assert moments["e"] == {AGE}


_events = st.lists(
    st.tuples(
        st.integers(0, 200 * DAY_MS),
        st.sampled_from(["purchase", "browse", "feedback"]),
        st.sampled_from([5.0, 60.0, 300.0]),
        st.sampled_from(["view", "add_to_cart", "checkout_start", "search"]),
        st.sampled_from(["rock", "jazz", "pop"]),
    ),
    min_size=1,
    max_size=25,
)


def _event(i: int, ts: int, type_: str, amount: float, action: str, category: str) -> Event:
    body: dict[str, Any] = {
        "purchase": {"amount": amount, "order_id": f"o{i}", "category": category},
        "browse": {"action": action, "category": category},
        "feedback": {"kind": "complaint"} if amount == 5.0 else {"kind": "nps", "score": int(amount) % 11},
    }[type_]
    return Event(f"e{i}", "c", type_, T0 + ts, body, Source(TOPIC[type_], 0, i))


def _run(rules: RuleSet, events: list[Event], end: int) -> list[Any]:
    """Every event folded in its own batch at its own time, then the customer's timers fired up
    to ``end`` one by one, as the due loop would: every record published, in order."""
    state, published = CustomerState(), []
    for event in events:
        result = fold_customer(
            rules, state, "c", [event], now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=7 * DAY_MS
        )
        published += result.outputs[result.resent :]
    result = FoldResult()
    reevaluate_customer(rules, state, "c", end, result, {"kind": "timer"}, f"timer:{end}")
    return [*published, *result.outputs[result.resent :]]


@settings(max_examples=60, deadline=None)
@given(_events, st.integers(0, 400 * DAY_MS))
def test_the_same_records_as_deciding_every_dimension_at_every_moment(
    drawn: list[tuple[int, str, float, str, str]], later: int
) -> None:
    events = sorted(
        (_event(i, ts - ts % HOUR_MS + i, *rest) for i, (ts, *rest) in enumerate(drawn)), key=lambda e: e.ts
    )
    events = [dataclasses.replace(e, source=Source(e.source.topic, 0, i)) for i, e in enumerate(events)]
    end = events[-1].ts + later
    assert _run(RULES, events, end) == _run(EVERY_MOMENT, events, end)
