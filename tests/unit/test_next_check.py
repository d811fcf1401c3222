"""segengine.timers.next_check against brute force, pure (no I/O).

For each kind of time dependency a rule can have (a purchase leaving a window, an hour of
browsing leaving one, a complaint leaving the 90-day window, a days_since / hours_since
threshold, a min_dwell, an exit_grace, a declared windowed aggregation), hypothesis draws
small rules and event histories. The state is built as the engine builds it (each event
folded and decided at its own time, then a timer evaluation at ``now``), and the rules
are evaluated over a fine grid of later times: what the rules can see (each condition's
truth, the window features, and what a full evaluation would decide) must not change
strictly before ``next_check``, and, where the rules make it certain, must change at it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from segengine.evaluate import FoldResult, decide, fold_customer, reevaluate_customer
from segengine.events import Event, Source
from segengine.rules import RuleSet, parse_rules
from segengine.rules.expr import compile_value
from segengine.state import (
    ACTIONS,
    BROWSE_WINDOWS_HOURS,
    DAY_MS,
    HOUR_MS,
    PURCHASE_WINDOWS_DAYS,
    CustomerState,
    Features,
)
from segengine.timers import next_check

B = 1_700_000_000_123  # on purpose not on a day or an hour boundary
GRID = 160  # evenly spaced probes between now and next_check, besides the edges
NEVER = 3 * 365 * DAY_MS  # with no next check, nothing may change for this long
TOPIC = {"purchase": "events.purchase", "browse": "events.browse", "feedback": "events.feedback"}
History = list[tuple[str, int, dict[str, Any]]]  # (type, ts, body)


@cache
def rules_of(text: str) -> RuleSet:
    return parse_rules(text)


def build(rules: RuleSet, history: History, delta: int) -> tuple[CustomerState, int]:
    """The state the engine holds at ``now`` (the latest event time + ``delta``): every event
    folded in the order given and decided at its own time, then a timer evaluation at now."""
    events = [
        Event(f"e{i}", "c", type_, ts, body, Source(TOPIC[type_], 0, i)) for i, (type_, ts, body) in enumerate(history)
    ]
    state = CustomerState()
    fold_customer(rules, state, "c", events, now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=7 * DAY_MS)
    now = max((ts for _, ts, _ in history), default=B) + delta
    reevaluate_customer(rules, state, "c", now, FoldResult(), {"kind": "timer"}, "timer")
    return state, now


class Probe:
    """What the rules can see of a customer at time t."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.conditions: list[tuple[str, Callable[..., Any]]] = []
        for dim in rules.dimensions:
            for segment in dim.segments:
                for expression in {id(e): e for e in (segment.enter, segment.stay)}.values():
                    self.conditions.append((dim.name, compile_value(expression, population=rules.population)))

    def __call__(self, state: CustomerState, t: int) -> tuple[Any, ...]:
        features = Features(state, t, self.rules.derived)
        truths = tuple(bool(fn(features, state.members.get(dim), t)) for dim, fn in self.conditions)
        plan = self.rules.time_plan
        windows: list[Any] = []
        # the windows the rules read (a window no rule reads may move: it changes nothing)
        windows += [features[f"{k}_{d}d"] for d in plan.purchase_windows for k in ("orders", "spend")]
        read_browse = [w for w, hours in BROWSE_WINDOWS_HOURS.items() if hours in plan.browse_windows]
        windows += [features[f"{a}_{w}"] for w in read_browse for a in ACTIONS]
        if plan.complaints:
            windows.append(features["complaints_90d"])
        windows += [aggregate.value(state, t) for aggregate in plan.windows]
        decided = CustomerState.loads(state.dumps())  # every dimension, as a timer at t would
        decide(self.rules, decided, "c", t, {"kind": "timer"}, "probe", FoldResult())
        return truths, tuple(windows), decided.members, decided.grace_since


def grid(start: int, end: int) -> list[int]:
    """Times strictly between start and end: the edges, every hour near them, and an even spread."""
    if end - start < 2:
        return []
    points = {start + 1, end - 1}
    points |= {start + (end - start) * i // GRID for i in range(1, GRID)}
    points |= {start + h * HOUR_MS for h in range(1, 49)} | {end - h * HOUR_MS for h in range(1, 49)}
    return sorted(p for p in points if start < p < end)


def check(rules: RuleSet, state: CustomerState, now: int, *, must_change: bool = True) -> int | None:
    """Nothing the rules can see changes in [now, next_check); with ``must_change``, something does at it."""
    probe = Probe(rules)
    due = next_check(rules.time_plan, state, now)
    assert due is None or due > now
    at_now = probe(state, now)
    assert (at_now[2], at_now[3]) == (state.members, state.grace_since), "the state is settled at now"
    for t in grid(now, due if due is not None else now + NEVER):
        assert probe(state, t) == at_now, (
            f"changed {t - now} ms after now, before next_check ({None if due is None else due - now} ms after now)"
        )
    if due is not None and must_change:
        assert probe(state, due) != probe(state, due - 1), f"nothing changes at next_check ({due - now} ms after now)"
    return due


# -- strategies ---------------------------------------------------------------------------------


def moments(days: int) -> st.SearchStrategy[int]:
    """Offsets (ms) within ``days``: any millisecond, or whole days and hours (window edges)."""
    return st.one_of(
        st.integers(0, days * DAY_MS),
        st.integers(0, days).map(lambda d: d * DAY_MS),
        st.integers(0, days * 24).map(lambda h: h * HOUR_MS),
    )


def deltas(days: int) -> st.SearchStrategy[int]:
    return st.one_of(st.just(0), moments(days))


purchases = st.lists(st.tuples(moments(500), st.sampled_from([0.0, 5.0, 40.0, 120.0, 300.0, 900.0])), max_size=8)


def purchase_history(drawn: list[tuple[int, float]]) -> History:
    return [("purchase", B + at, {"order_id": f"o{i}", "amount": amount}) for i, (at, amount) in enumerate(drawn)]


# -- each kind of time dependency ----------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    spend_days=st.sampled_from(PURCHASE_WINDOWS_DAYS), orders_days=st.sampled_from(PURCHASE_WINDOWS_DAYS),
    spend=st.sampled_from([40, 100, 250]), orders=st.integers(1, 3), drawn=purchases, delta=deltas(400),
)  # fmt: skip
def test_purchase_windows(
    spend_days: int, orders_days: int, spend: int, orders: int, drawn: list[tuple[int, float]], delta: int
) -> None:
    rules = rules_of(f"""
dimensions:
  tier:
    segments:
      - {{name: top, when: "spend_{spend_days}d >= {spend}"}}
      - {{name: mid, when: "orders_{orders_days}d >= {orders}"}}
    default: low
""")
    state, now = build(rules, purchase_history(drawn), delta)
    due = check(rules, state, now)
    if due is not None:  # exactly when a purchase leaves a window
        assert any(due == ts + d * DAY_MS for ts, _ in state.purchases for d in PURCHASE_WINDOWS_DAYS)


@settings(max_examples=80, deadline=None)
@given(
    views=st.integers(1, 3), searches=st.integers(0, 2),
    drawn=st.lists(st.tuples(moments(40), st.sampled_from(["view", "search", "add_to_cart", "wishlist"])), max_size=10),
    delta=deltas(35),
)  # fmt: skip
def test_browse_windows(views: int, searches: int, drawn: list[tuple[int, str]], delta: int) -> None:
    rules = rules_of(f"""
dimensions:
  intent:
    segments:
      - {{name: hot, when: "view_24h >= {views}"}}
      - {{name: warm, when: "add_to_cart_7d >= 1"}}
      - {{name: curious, when: "search_30d > {searches}"}}
    default: cold
""")
    history: History = [("browse", B + at, {"action": action}) for at, action in drawn]
    state, now = build(rules, history, delta)
    check(rules, state, now)


@settings(max_examples=80, deadline=None)
@given(
    threshold=st.integers(1, 3),
    drawn=st.lists(st.tuples(moments(200), st.sampled_from(["complaint", "complaint", "nps"])), max_size=8),
    delta=deltas(120),
)  # fmt: skip
def test_complaints_window(threshold: int, drawn: list[tuple[int, str]], delta: int) -> None:
    rules = rules_of(f"""
dimensions:
  complaint:
    segments:
      - {{name: complaining, when: "complaints_90d >= {threshold}"}}
    default: none
""")
    history: History = [
        ("feedback", B + at, {"kind": kind, **({"score": 7} if kind == "nps" else {})}) for at, kind in drawn
    ]
    state, now = build(rules, history, delta)
    check(rules, state, now)


constants = st.one_of(st.integers(1, 200), st.integers(1, 400).map(lambda n: n / 2))


@settings(max_examples=120, deadline=None)
@given(
    gone=constants, fresh=constants, hours=st.integers(1, 72), old=constants,
    bought=purchases, browsed=st.lists(moments(300), max_size=4), delta=deltas(300),
)  # fmt: skip
def test_days_since_thresholds(
    gone: float, fresh: float, hours: int, old: float, bought: list[tuple[int, float]], browsed: list[int], delta: int
) -> None:
    # Strict and non-strict comparisons, the constant on either side, days_since_X and hours_since(X_ts).
    rules = rules_of(f"""
dimensions:
  recency:
    segments:
      - {{name: gone, when: "days_since_last_purchase > {gone}"}}
      - {{name: fresh, when: "{fresh} >= days_since_first_purchase"}}
      - {{name: surfing, when: "hours_since(last_browse_ts) <= {hours}"}}
      - {{name: old_friend, when: "{old} < days_since_first_seen"}}
    default: other
""")
    history = purchase_history(bought) + [("browse", B + at, {"action": "view"}) for at in browsed]
    state, now = build(rules, history, delta)
    due = check(rules, state, now)
    if due is not None:  # 1 ms past a threshold: where these comparisons ('>' and '<=', either way round) flip
        assert any(due == getattr(state, a) + int(c * u) + 1 for a, c, u in [
            ("last_purchase", gone, DAY_MS), ("first_purchase", fresh, DAY_MS), ("last_browse", hours, HOUR_MS), ("first_seen", old, DAY_MS)
        ] if getattr(state, a) is not None)  # fmt: skip


def pending_move(rules: RuleSet, state: CustomerState, now: int) -> bool:
    """Whether some dimension's rules point elsewhere than where the customer is (held back)."""
    features = Features(state, now, rules.derived)
    for dim in rules.dimensions:
        index, _ = dim.select(features, state.members.get(dim.name), now)
        if dim.segment(index) != state.members.get(dim.name):
            return True
    return False


@settings(max_examples=100, deadline=None)
@given(
    dwell_days=st.integers(1, 60), dwell_hours=st.integers(1, 240),
    drawn=st.lists(st.tuples(moments(60), st.sampled_from([5.0, 40.0, 120.0])), min_size=1, max_size=3), delta=deltas(70),
)  # fmt: skip
@example(
    dwell_days=31, dwell_hours=1, drawn=[(0, 120.0)], delta=30 * DAY_MS
)  # out of the 30-day window, held for a day
def test_min_dwell(dwell_days: int, dwell_hours: int, drawn: list[tuple[int, float]], delta: int) -> None:
    rules = rules_of(f"""
dimensions:
  tier:
    segments:
      - {{name: high, when: "spend_30d >= 100", min_dwell: {dwell_days}d}}
      - {{name: mid, when: "orders_90d >= 1", min_dwell: {dwell_hours}h}}
    default: low
""")
    state, now = build(rules, purchase_history(drawn), delta)
    # A dwell's end is a check whether or not a move is held back by it; only a held move must happen then.
    due = check(rules, state, now, must_change=False)
    segment = state.members.get("tier")
    dwell = {"high": dwell_days * DAY_MS, "mid": dwell_hours * HOUR_MS}.get(segment or "")
    if (
        due is not None
        and dwell is not None
        and due == state.member_since["tier"] + dwell
        and pending_move(rules, state, now)
    ):
        probe = Probe(rules)
        assert probe(state, due) != probe(state, due - 1), "the move held back by min_dwell happens when it ends"


@settings(max_examples=100, deadline=None)
@given(
    gold_grace=st.integers(1, 60), silver_grace=st.integers(1, 60), dwell=st.integers(0, 20),
    drawn=st.lists(st.tuples(moments(700), st.sampled_from([100.0, 250.0, 500.0, 900.0])), max_size=8), delta=deltas(500),
)  # fmt: skip
@example(gold_grace=30, silver_grace=30, dwell=0, drawn=[(0, 1200.0)], delta=380 * DAY_MS)  # 15 days into gold's grace
def test_exit_grace(gold_grace: int, silver_grace: int, dwell: int, drawn: list[tuple[int, float]], delta: int) -> None:
    min_dwell = f", min_dwell: {dwell}d" if dwell else ""
    rules = rules_of(f"""
features:
  points: spend_365d
dimensions:
  loyalty:
    segments:
      - {{name: gold, enter: "points >= 1000", stay: "points >= 800", exit_grace: {gold_grace}d{min_dwell}}}
      - {{name: silver, enter: "points >= 300", stay: "points >= 240", exit_grace: {silver_grace}d}}
    default: bronze
""")
    state, now = build(rules, purchase_history(drawn), delta)
    due = check(rules, state, now, must_change=not dwell)
    if "loyalty" in state.grace_since:  # a grace period is running: it ends the hold, or a window comes first
        grace = {"gold": gold_grace, "silver": silver_grace}[state.members["loyalty"]] * DAY_MS
        assert due is not None and due <= state.grace_since["loyalty"] + grace


@settings(max_examples=80, deadline=None)
@given(
    window_hours=st.sampled_from([6, 48, 24 * 7, 24 * 10]), at_least=st.integers(1, 3),
    drawn=st.lists(st.tuples(moments(30), st.sampled_from(["view", "view", "search"])), max_size=10), delta=deltas(20),
)  # fmt: skip
def test_declared_windowed_aggregation(
    window_hours: int, at_least: int, drawn: list[tuple[int, str]], delta: int
) -> None:
    rules = rules_of(f"""
features:
  recent_views: {{op: count, of: browse, where: "action == 'view'", window: {window_hours}h}}
dimensions:
  looking:
    segments:
      - {{name: yes, when: "recent_views >= {at_least}"}}
    default: no
""")
    history: History = [("browse", B + at, {"action": action}) for at, action in drawn]
    state, now = build(rules, history, delta)
    check(rules, state, now)


# -- non-strict thresholds: they flip at X + C itself, 1 ms before the strict ones -----------------


@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from([">=", "<", "=="]), days=st.integers(1, 200), drawn=purchases.filter(bool), delta=deltas(300))
def test_non_strict_thresholds_are_caught_exactly(
    op: str, days: int, drawn: list[tuple[int, float]], delta: int
) -> None:
    rules = rules_of(f"""
dimensions:
  recency:
    segments:
      - {{name: flagged, when: "days_since_last_purchase {op} {days}"}}
    default: other
""")
    state, now = build(rules, purchase_history(drawn), delta)
    check(rules, state, now)


# -- customer_age_days: whole UTC days since the first purchase day, moving at midnight -----------

_MIRRORED = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}


@settings(max_examples=120, deadline=None)
@given(
    op=st.sampled_from(list(_MIRRORED)), days=constants, flipped=st.booleans(),
    drawn=purchases.filter(bool), delta=deltas(300),
)  # fmt: skip
def test_customer_age_thresholds_flip_at_midnight(
    op: str, days: float, flipped: bool, drawn: list[tuple[int, float]], delta: int
) -> None:
    condition = f"{days} {_MIRRORED[op]} customer_age_days" if flipped else f"customer_age_days {op} {days}"
    rules = rules_of(f"""
dimensions:
  age:
    segments:
      - {{name: flagged, when: "{condition}"}}
    default: other
""")
    state, now = build(rules, purchase_history(drawn), delta)
    never_equal = op in ("==", "!=") and days != int(days)  # a whole number of days is never 2.5
    due = check(rules, state, now, must_change=not never_equal)
    if due is not None:
        assert due % DAY_MS == 0 and due - state.first_purchase // DAY_MS * DAY_MS in (
            math.floor(days) * DAY_MS, (math.floor(days) + 1) * DAY_MS, math.ceil(days) * DAY_MS
        )  # fmt: skip
