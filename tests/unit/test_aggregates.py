"""Declared aggregations: every op against a brute-force computation over the raw events
(property test), the rules checker's errors for them, and their part in incremental
evaluation and timers. Pure: no I/O."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segengine.aggregates import DAY_MS, HOUR_MS, OPS
from segengine.evaluate import fold_customer
from segengine.events import Event, Source
from segengine.rules import check_rules, parse_rules
from segengine.state import CustomerState, Features
from segengine.timers import next_check

CATEGORIES = ["rock", "jazz", "pop", None]
ACTIONS = ["view", "search", "add_to_cart"]
T0 = 20_000 * DAY_MS


def rules_for(op: str, window: str, where: str | None = None) -> str:
    field = (
        "" if op == "count" else "\n    field: price" if op in ("sum", "avg", "min", "max") else "\n    field: category"
    )
    where_line = f'\n    where: "{where}"' if where else ""
    return f"""
features:
  agg:
    op: {op}{field}
    of: browse{where_line}
    window: {window}
dimensions:
  d:
    segments:
      - {{name: some, when: agg != null}}
    default: none
"""


browse_events = st.lists(
    st.tuples(
        st.integers(0, 20 * 24),  # hours after T0
        st.sampled_from(ACTIONS),
        st.sampled_from(CATEGORIES),
        st.one_of(st.none(), st.integers(0, 500)),
    ),
    min_size=0,
    max_size=25,
)


def make_events(raw: list[tuple[int, str, str | None, int | None]]) -> list[Event]:
    events = []
    for i, (hour, action, category, price) in enumerate(sorted(raw, key=lambda r: r[0])):
        body: dict[str, Any] = {"action": action}
        if category is not None:
            body["category"] = category
        if price is not None:
            body["price"] = price
        events.append(Event(f"e{i}", "c", "browse", T0 + hour * HOUR_MS + i, body, Source("events.browse", 0, i)))
    return events


def brute_force(
    op: str, events: list[Event], now: int, window_ms: int | None, bucket_ms: int, where_action: str | None
) -> Any:
    """The definition, straight: every matching event whose bucket is in the window at ``now``."""
    rows = []
    for order, e in enumerate(events):
        if where_action is not None and e.body["action"] != where_action:
            continue
        bucket = e.ts // bucket_ms
        if window_ms is not None and not ((bucket + 1) * bucket_ms > now - window_ms and bucket * bucket_ms <= now):
            continue
        rows.append((e.ts, order, e.body))
    field = None if op == "count" else "price" if op in ("sum", "avg", "min", "max") else "category"
    if field is None:  # count
        return len(rows)
    values = [(ts, order, body[field]) for ts, order, body in rows if body.get(field) is not None]
    vs = [v for _, _, v in values]
    if op == "sum":
        return sum(vs)
    if op == "avg":
        return sum(vs) / len(vs) if vs else None
    if op == "min":
        return min(vs) if vs else None
    if op == "max":
        return max(vs) if vs else None
    if op == "first":
        return min(values)[2] if values else None
    if op == "last":
        return max(values)[2] if values else None
    if op == "distinct":
        return len(set(vs))
    counts: dict[str, int] = {}
    for v in vs:
        counts[v] = counts.get(v, 0) + 1
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counts else None


@pytest.mark.parametrize("window", ["6h", "2d", "10d", "all"])
@pytest.mark.parametrize("op", sorted(OPS))
@settings(max_examples=40, deadline=None)
@given(
    where=st.sampled_from([None, "view"]),
    raw=browse_events,
    later=st.one_of(st.just(0), st.integers(0, 12 * 24)),
)
def test_every_op_equals_brute_force(op: str, window: str, where: str | None, raw: list[Any], later: int) -> None:
    rules = parse_rules(rules_for(op, window, f"action == '{where}'" if where else None))
    (aggregate,) = rules.aggregates
    events = make_events(raw)
    state = CustomerState()
    fold_customer(rules, state, "c", events, now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=7 * DAY_MS)
    now = (state.max_ts or T0) + later * HOUR_MS
    got = Features(state, now, rules.derived)["agg"]
    want = brute_force(op, events, now, aggregate.window_ms, aggregate.bucket_ms, where)
    assert got == pytest.approx(want) if isinstance(want, float) else got == want


def same(a: Any, b: Any) -> bool:
    return a == pytest.approx(b) if isinstance(b, float) else a == b


@pytest.mark.parametrize("op", sorted(OPS))
@settings(max_examples=40, deadline=None)
@given(raw=browse_events.filter(bool), window=st.sampled_from(["6h", "2d", "10d"]))
def test_a_windowed_value_changes_only_at_a_scheduled_check(op: str, raw: list[Any], window: str) -> None:
    """Between the next check times the timers compute, the value cannot change: read by the
    definition (``brute_force``) at every moment an event's bucket leaves the window before
    the check, for every op."""
    rules = parse_rules(rules_for(op, window))
    (aggregate,) = rules.aggregates
    events = make_events(raw)
    state = CustomerState()
    fold_customer(rules, state, "c", events, now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=7 * DAY_MS)
    size, span = aggregate.bucket_ms, aggregate.window_ms
    assert span is not None
    departures = sorted({(e.ts // size + 1) * size + span for e in events})

    def value(at: int) -> Any:
        return brute_force(op, events, at, span, size, None)

    now = state.max_ts or T0
    for _ in range(50):
        due = next_check(rules.time_plan, state, now)
        passed = [t for t in departures if now < t < (due if due is not None else 1 << 62)]
        for t in [*passed, *([due - 1] if due is not None else [])]:
            assert same(value(t), value(now)), f"the value moved at {t}, before the check at {due}"
        assert same(Features(state, now, rules.derived)["agg"], value(now))
        if due is None:
            assert same(value(now + 400 * DAY_MS), value(now))
            return
        assert due in departures
        now = due
    raise AssertionError("the windows never emptied")


def test_purchase_items_weighted_with_views_pick_the_top_category() -> None:
    rules = parse_rules("""
features:
  top:
    op: most_frequent
    field: category
    of:
      browse: {where: "action == 'view'"}
      purchase_item: {weight: 5}
    window: 90d
dimensions:
  affinity:
    segments:
      - {name: jazz, when: "top == 'jazz'"}
      - {name: rock, when: "top == 'rock'"}
    default: none
""")
    views = [
        Event(f"v{i}", "c", "browse", T0 + i, {"action": "view", "category": "jazz"}, Source("events.browse", 0, i))
        for i in range(4)
    ]
    searches = [
        Event(
            f"s{i}",
            "c",
            "browse",
            T0 + 10 + i,
            {"action": "search", "category": "pop"},
            Source("events.browse", 0, 10 + i),
        )
        for i in range(9)
    ]
    order = Event(
        "p",
        "c",
        "purchase",
        T0 + 100,
        {"order_id": "o", "amount": 9.0, "items": [{"sku": "x", "category": "rock", "qty": 1, "price": 9.0}]},
        Source("events.purchase", 0, 0),
    )
    state = CustomerState()
    fold_customer(rules, state, "c", [*views, *searches], now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=DAY_MS)
    assert state.members["affinity"] == "jazz"  # searches do not count: the where filter
    fold_customer(rules, state, "c", [order], now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=DAY_MS)
    assert state.members["affinity"] == "rock"  # one purchased item weighs 5 views
    assert Features(state, T0 + 91 * DAY_MS, rules.derived)["top"] is None  # out of the window


def test_only_declared_aggregations_are_kept_and_a_dropped_one_is_forgotten() -> None:
    with_agg = parse_rules(rules_for("count", "10d"))
    state = CustomerState()
    events = make_events([(1, "view", "rock", 5), (2, "view", "jazz", 6)])
    fold_customer(with_agg, state, "c", events[:1], now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=DAY_MS)
    assert list(state.aggs) == [with_agg.aggregates[0].key]
    without = parse_rules("dimensions:\n  d:\n    segments:\n      - {name: x, when: orders_total > 0}\n")
    fold_customer(without, state, "c", events[1:], now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=DAY_MS)
    assert state.aggs == {}


def test_a_dimension_reading_only_browse_aggregations_is_not_evaluated_on_purchases() -> None:
    rules = parse_rules(rules_for("count", "10d"))
    (dim,) = rules.dimensions
    assert dim.triggers == {"browse", "erase", "timer"}


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (
            "  a: {op: median, field: price, of: browse}\n",
            "r.yaml:2:11: aggregation 'a' needs 'op', one of count, sum, avg, min, max, first, last, distinct, most_frequent",
        ),
        (
            "  a: {op: sum, field: category, of: browse}\n",
            "r.yaml:2:23: type mismatch: sum needs a number, browse.category is a string",
        ),
        (
            "  a: {op: count, of: basket}\n",
            "r.yaml:2:22: unknown event kind 'basket': use browse, purchase, purchase_item, refund, feedback",
        ),
        ("  a: {op: last, field: colour, of: browse}\n", "r.yaml:2:24: browse events have no field 'colour'"),
        (
            "  a: {op: count, of: browse, window: 3 weeks}\n",
            "r.yaml:2:38: bad duration '3 weeks': use a number and s, m, h, d or w (e.g. 30d), or 'all'",
        ),
        ("  a: {op: count, of: browse, where: \"colour == 'red'\"}\n", "r.yaml:2:38: unknown feature 'colour'"),
        (
            "  a: {op: count, of: browse, where: \"price > 'x'\"}\n",
            "r.yaml:2:46: type mismatch: comparing a number with a string (\"'x'\")",
        ),
        (
            "  a: {op: count, of: browse, colour: red}\n",
            "r.yaml:2:30: unknown aggregation field 'colour': use op, field, of, where, weight, window, description",
        ),
    ],
)
def test_aggregation_errors_have_line_and_column(features: str, expected: str) -> None:
    text = "features:\n" + features + "dimensions:\n  d:\n    segments:\n      - {name: x, when: a != null}\n"
    rules, problems = check_rules(text, "r.yaml")
    assert rules is None
    assert expected in problems, problems


def test_a_comparison_of_a_string_aggregation_with_a_number_is_refused() -> None:
    text = "features:\n  top: {op: most_frequent, field: category, of: browse}\ndimensions:\n  d:\n    segments:\n      - {name: x, when: top > 3}\n"
    rules, problems = check_rules(text, "r.yaml")
    assert rules is None and problems == ["r.yaml:6:31: type mismatch: comparing a string with a number ('3')"]


def test_built_in_window_detail_is_kept_only_when_the_rules_read_those_windows() -> None:
    lifetime_only = parse_rules("dimensions:\n  d:\n    segments:\n      - {name: buyer, when: orders_total > 0}\n")
    windows = parse_rules(
        "dimensions:\n  d:\n    segments:\n      - {name: hot, when: view_24h > 0 and spend_30d > 0}\n"
    )
    events = [
        Event("b", "c", "browse", T0, {"action": "view"}, Source("events.browse", 0, 0)),
        Event("p", "c", "purchase", T0 + 1, {"order_id": "o", "amount": 5.0}, Source("events.purchase", 0, 0)),
    ]
    lean, full = CustomerState(), CustomerState()
    fold_customer(lifetime_only, lean, "c", events, now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=DAY_MS)
    fold_customer(windows, full, "c", events, now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=DAY_MS)
    assert (lean.purchases, lean.browse, lean.orders, lean.browse_total) == ([], {}, 1, 1)
    assert full.purchases and full.browse and full.members["d"] == "hot"
