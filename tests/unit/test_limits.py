"""Per-customer limits: every cap, what happens at it, and the amortised pruning that keeps
dedupe exact within the horizon (a property test against a naive reference). Pure: no I/O;
outcomes only, never timings."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segengine.aggregates import MAX_TRACKED, MAX_VALUE_CHARS
from segengine.evaluate import fold_customer
from segengine.events import Event, Source
from segengine.folding import apply
from segengine.rules import parse_rules
from segengine.state import (
    COMPLAINT_WINDOW_DAYS,
    DAY_MS,
    DEDUPE_SLACK_DIVISOR,
    HOUR_MS,
    LIMIT_EXCEEDED,
    MAX_ATTRIBUTE_CHARS,
    MAX_ATTRIBUTE_NAME,
    MAX_ATTRIBUTES,
    MAX_COMPLAINTS,
    MAX_FINGERPRINTS,
    MAX_PURCHASE_ENTRIES,
    MAX_STATE_BYTES,
    CustomerState,
    Features,
    LimitExceeded,
    check_size,
)

T0 = 1_600_000_000_000
HORIZON = 7 * DAY_MS
_offsets = iter(range(10**9))


def ev(type_: str, ts: int, event_id: str | None = None, **body: Any) -> Event:
    offset = next(_offsets)
    return Event(event_id or f"e{offset}", "c1", type_, ts, dict(body), Source("events.x", 0, offset))


def fold(state: CustomerState, *events: Event, horizon: int = HORIZON) -> CustomerState:
    for e in events:
        apply(state, e, dedupe_horizon_ms=horizon)
    return state


# -- dedupe fingerprints -------------------------------------------------------------------

SMALL_HORIZON = 16_000
SLACK = SMALL_HORIZON // DEDUPE_SLACK_DIVISOR


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(-2 * SMALL_HORIZON, 3_000)), min_size=1, max_size=200))
def test_dedupe_is_exact_within_the_horizon_and_forgets_after_horizon_plus_slack(steps: list[tuple[int, int]]) -> None:
    """Against a naive reference that remembers every applied event_id with its time: a repeat
    of one applied within the horizon (of the latest event) counts once; one applied more than
    horizon + slack before is applied again; in between, either (the documented slack)."""
    state = CustomerState()
    applied: dict[str, int] = {}  # the reference: event_id -> ts of its applied occurrence
    latest: int | None = None
    clock = T0
    for id_number, move in steps:
        clock = max(T0, clock + move)  # mostly forward, sometimes late
        event_id = f"id{id_number}"
        fresh = apply(state, ev("browse", clock, event_id, action="view"), dedupe_horizon_ms=SMALL_HORIZON)
        if event_id in applied and latest is not None and applied[event_id] >= latest - SMALL_HORIZON:
            assert not fresh, "a repeat within the horizon must count once"
        elif event_id not in applied or (latest is not None and applied[event_id] < latest - SMALL_HORIZON - SLACK):
            assert fresh, "an event_id never applied, or applied beyond horizon + slack, must be applied"
        if fresh:
            applied[event_id] = clock
        latest = clock if latest is None else max(latest, clock)
        # The fingerprints kept: none older than horizon + slack, every one within the horizon.
        assert all(t >= latest - SMALL_HORIZON - SLACK for t in state.seen.values())
        assert state.seen_oldest is None or state.seen_oldest <= min(state.seen.values())


def test_a_document_without_the_oldest_bound_is_read_and_pruned() -> None:
    old = CustomerState()
    old.seen = {f"f{i}": T0 + i for i in range(20)}
    old.max_ts = T0 + 19
    document = {k: v for k, v in old.__dict__.items() if k not in ("pending", "outbox_writer", "seen_oldest")}
    state = CustomerState.loads(orjson.dumps(document))  # JSON under the full names, as versions before wrote it
    apply(state, ev("browse", T0 + 2 * HORIZON, action="view"), dedupe_horizon_ms=HORIZON)
    assert len(state.seen) == 1 and state.seen_oldest == T0 + 2 * HORIZON


def test_fingerprints_are_capped_and_the_newest_still_dedupe() -> None:
    state = CustomerState()
    total = MAX_FINGERPRINTS + 500
    fold(state, *(ev("browse", T0 + i, f"x{i}", action="view") for i in range(total)))
    assert len(state.seen) <= MAX_FINGERPRINTS
    assert state.browse_total == total
    # The newest 3/4 of the cap are always kept: a repeat of one of them counts once.
    for i in range(total - MAX_FINGERPRINTS * 3 // 4, total, 997):
        assert not apply(state, ev("browse", T0 + total, f"x{i}", action="view"), dedupe_horizon_ms=HORIZON)
    assert state.browse_total == total


def test_a_late_event_beyond_the_horizon_is_not_remembered() -> None:
    state = fold(CustomerState(), ev("browse", T0 + 30 * DAY_MS, action="view"))
    assert apply(state, ev("browse", T0, "late", action="view"), dedupe_horizon_ms=HORIZON)
    assert len(state.seen) == 1  # it could only be forgotten at once


# -- purchases -----------------------------------------------------------------------------


def brute(purchases: list[tuple[int, float]], now: int, days: int) -> tuple[int, float]:
    inside = [a for t, a in purchases if now - days * DAY_MS < t <= now]
    return len(inside), round(sum(inside), 2)


@pytest.mark.parametrize(
    ("every_ms", "count", "exact_to"), [(6 * 60_000, 3_000, HOUR_MS), (30 * 60_000, 4_000, DAY_MS)]
)
def test_purchases_past_the_cap_merge_by_hour_then_day_and_windows_stay_exact_to_it(
    every_ms: int, count: int, exact_to: int
) -> None:
    """10 purchases an hour: same-hour ones merge, windows exact at every hour. 2 an hour for
    2,000 hours: merging by hour is not enough, they merge by day, exact at every day."""
    state = CustomerState()
    raw = [(T0 + 60_000 + i * every_ms, float(1 + i % 7)) for i in range(count)]
    fold(state, *(ev("purchase", t, order_id=f"o{i}", amount=a) for i, (t, a) in enumerate(raw)))
    assert len(state.purchases) <= MAX_PURCHASE_ENTRIES
    assert any(type(p[1]) is list for p in state.purchases)
    last = raw[-1][0]
    assert Features(state, last)["orders_total"] == count  # lifetime counters are exact
    assert Features(state, last)["orders_365d"] == count
    for now in range(last // exact_to * exact_to, last + 40 * DAY_MS, exact_to):
        f = Features(state, now)
        for days in (7, 30, 90, 365):
            orders, spend = brute(raw, now, days)
            assert (f[f"orders_{days}d"], f[f"spend_{days}d"]) == (orders, pytest.approx(spend)), (now, days)


def test_a_late_purchase_among_merged_ones_counts() -> None:
    state = CustomerState()
    raw = [(T0 + 60_000 + i * 6 * 60_000, 2.0) for i in range(MAX_PURCHASE_ENTRIES + 10)]
    fold(state, *(ev("purchase", t, order_id=f"o{i}", amount=a) for i, (t, a) in enumerate(raw)))
    fold(state, ev("purchase", T0 + 30 * 60_000 + 1, order_id="late", amount=5.0))
    now = raw[-1][0]
    assert Features(state, now)["orders_365d"] == len(raw) + 1
    assert Features(state, now)["spend_365d"] == pytest.approx(2.0 * len(raw) + 5.0)
    assert [p[0] for p in state.purchases] == sorted(p[0] for p in state.purchases)


def test_purchase_days_stay_sorted_and_distinct() -> None:
    state = CustomerState()
    times = [T0 + d * DAY_MS + h * HOUR_MS for d in (0, 3, 5) for h in (1, 2)] + [T0 + 4 * DAY_MS, T0 + 3 * DAY_MS + 5]
    fold(state, *(ev("purchase", t, order_id=f"o{i}", amount=1.0) for i, t in enumerate(times)))
    assert state.purchase_days == [T0 // DAY_MS + d for d in (0, 3, 4, 5)]


# -- complaints, browse buckets ------------------------------------------------------------


def test_complaints_saturate_at_the_cap() -> None:
    state = CustomerState()
    fold(state, *(ev("feedback", T0 + i * 60_000, kind="complaint") for i in range(MAX_COMPLAINTS + 200)))
    now = T0 + (MAX_COMPLAINTS + 200) * 60_000
    assert len(state.complaints) == MAX_COMPLAINTS
    assert Features(state, now)["complaints_90d"] == MAX_COMPLAINTS
    assert Features(state, now + COMPLAINT_WINDOW_DAYS * DAY_MS)["complaints_90d"] == 0


def test_browse_buckets_stay_within_the_window_and_a_day() -> None:
    state = CustomerState()
    fold(state, *(ev("browse", T0 + h * HOUR_MS, action="view") for h in range(60 * 24)))
    fold(state, ev("browse", T0, action="view"))  # late, outside every window: no bucket
    assert len(state.browse) <= 31 * 24 + 1
    assert str(T0 // HOUR_MS) not in state.browse
    assert state.browse_total == 60 * 24 + 1
    assert Features(state, T0 + (60 * 24 - 1) * HOUR_MS)["view_30d"] == 30 * 24


# -- profile attributes --------------------------------------------------------------------


def full_profile() -> CustomerState:
    return fold(CustomerState(), ev("profile", T0, attributes={f"a{i}": i for i in range(MAX_ATTRIBUTES)}))


def test_a_profile_event_past_the_attribute_cap_is_refused_and_changes_nothing() -> None:
    state = full_profile()
    before = state.dumps()
    with pytest.raises(LimitExceeded) as refused:
        apply(
            state, ev("profile", T0 + 1, attributes={"secret_name": "secret value", "a1": 5}), dedupe_horizon_ms=HORIZON
        )
    assert refused.value.code == LIMIT_EXCEEDED
    assert str(MAX_ATTRIBUTES) in refused.value.message and "secret" not in refused.value.message
    assert state.dumps() == before


def test_at_the_attribute_cap_updates_and_swaps_are_accepted() -> None:
    state = full_profile()
    fold(
        state,
        ev("profile", T0 + 1, attributes={"a1": "changed"}),
        ev("profile", T0 + 2, attributes={"a2": None, "new": 1}),
    )
    assert (
        len(state.attributes) == MAX_ATTRIBUTES and state.attributes["a1"] == "changed" and state.attributes["new"] == 1
    )


@pytest.mark.parametrize(
    "attributes",
    [{"n" * (MAX_ATTRIBUTE_NAME + 1): 1}, {"city": "x" * (MAX_ATTRIBUTE_CHARS + 1)}],
    ids=["long name", "long value"],
)
def test_a_long_attribute_name_or_value_is_refused(attributes: dict[str, Any]) -> None:
    state = CustomerState()
    with pytest.raises(LimitExceeded) as refused:
        apply(state, ev("profile", T0, attributes=attributes), dedupe_horizon_ms=HORIZON)
    assert refused.value.code == LIMIT_EXCEEDED and "x" * 10 not in refused.value.message
    assert state.is_empty and not state.seen and not state.offsets


def test_a_refused_profile_event_goes_to_the_fold_error() -> None:
    """Through the fold, the refusal reaches the pipeline's FoldError with its code."""
    from segengine.evaluate import FoldError

    rules = parse_rules(
        "dimensions:\n  d:\n    segments:\n      - {name: x, when: profile_a1 == 1}\n    default: none\n"
    )
    state = full_profile()
    with pytest.raises(FoldError) as failed:
        fold_customer(
            rules,
            state,
            "c1",
            [ev("profile", T0 + 1, attributes={"b": 1})],
            now_for=lambda t: t,
            committed={},
            dedupe_horizon_ms=HORIZON,
        )
    assert getattr(failed.value.cause, "code", None) == LIMIT_EXCEEDED


# -- the encoded document ------------------------------------------------------------------


def test_check_size_refuses_a_document_past_the_limit_unless_it_did_not_grow() -> None:
    check_size(b"x" * MAX_STATE_BYTES)
    with pytest.raises(LimitExceeded) as refused:
        check_size(b"x" * (MAX_STATE_BYTES + 1))
    assert refused.value.code == LIMIT_EXCEEDED and str(MAX_STATE_BYTES) in refused.value.message
    check_size(b"x" * (MAX_STATE_BYTES + 1), previous=MAX_STATE_BYTES + 10)  # over already, and shrinking
    with pytest.raises(LimitExceeded):
        check_size(b"x" * (MAX_STATE_BYTES + 11), previous=MAX_STATE_BYTES + 10)


# -- declared aggregations -----------------------------------------------------------------


def agg_rules(op: str, window: str | None) -> Any:
    window_line = f"\n    window: {window}" if window else ""
    return parse_rules(
        f"features:\n  agg:\n    op: {op}\n    field: category\n    of: browse{window_line}\n"
        "dimensions:\n  d:\n    segments:\n      - {name: some, when: agg != null}\n    default: none\n"
    )


def fold_browses(rules: Any, categories: list[tuple[int, str]]) -> CustomerState:
    state = CustomerState()
    events = [ev("browse", T0 + t, action="view", category=c) for t, c in categories]
    fold_customer(rules, state, "c1", events, now_for=lambda t: t, committed={}, dedupe_horizon_ms=HORIZON)
    return state


def test_an_all_time_distinct_count_saturates_at_the_cap() -> None:
    rules = agg_rules("distinct", None)
    state = fold_browses(rules, [(i, f"c{i}") for i in range(MAX_TRACKED + 50)] + [(MAX_TRACKED + 50, "c1")])
    (key,) = state.aggs
    assert isinstance(state.aggs[key], dict) and len(state.aggs[key]) == MAX_TRACKED
    assert Features(state, T0 + DAY_MS, rules.derived)["agg"] == MAX_TRACKED


def test_a_windowed_keyed_aggregation_drops_its_oldest_buckets_at_the_cap() -> None:
    """30 distinct categories a day for 60 days, window 90 days: 1,800 (value, day) entries
    asked for, 1,000 kept; the newest days always count."""
    rules = agg_rules("most_frequent", "90d")
    per_day = 30
    browses = [(d * DAY_MS + i, f"d{d}-c{i}") for d in range(60) for i in range(per_day)]
    browses += [(59 * DAY_MS + per_day + j, "d59-c0") for j in range(3)]  # the newest day's favourite
    state = fold_browses(rules, browses)
    (key,) = state.aggs
    assert sum(len(p) for _, p in state.aggs[key]) <= MAX_TRACKED
    assert state.aggs[key][-1][0] == (T0 + 59 * DAY_MS) // DAY_MS
    assert Features(state, T0 + 60 * DAY_MS, rules.derived)["agg"] == "d59-c0"


def test_long_values_are_not_tracked() -> None:
    rules = agg_rules("distinct", "30d")
    state = fold_browses(rules, [(0, "x" * (MAX_VALUE_CHARS + 1)), (1, "short")])
    assert Features(state, T0 + 1, rules.derived)["agg"] == 1


@pytest.mark.parametrize("window", [None, "30d"])
def test_old_list_partials_of_distinct_are_still_read(window: str | None) -> None:
    rules = agg_rules("distinct", window)
    (aggregate,) = rules.aggregates
    state = CustomerState()
    state.max_ts = T0
    bucket = T0 // aggregate.bucket_ms
    state.aggs[aggregate.key] = ["a", "b"] if window is None else [[bucket - 1, ["a", "b"]], [bucket, ["b", "c"]]]
    stored = orjson.dumps(state.aggs)
    assert Features(state, T0, rules.derived)["agg"] == (2 if window is None else 3)
    assert orjson.dumps(state.aggs) == stored  # reading changes nothing
    fold_customer(
        rules,
        state,
        "c1",
        [ev("browse", T0, action="view", category="d")],
        now_for=lambda t: t,
        committed={},
        dedupe_horizon_ms=HORIZON,
    )
    assert Features(state, T0, rules.derived)["agg"] == (3 if window is None else 4)


def test_purchases_go_back_to_one_entry_each_once_quiet() -> None:
    state = CustomerState()
    fold(
        state, *(ev("purchase", T0 + i * 60_000, order_id=f"o{i}", amount=1.0) for i in range(MAX_PURCHASE_ENTRIES + 1))
    )
    assert state.purchase_grain == HOUR_MS
    later = T0 + 400 * DAY_MS
    fold(state, ev("purchase", later, order_id="p1", amount=1.0), ev("purchase", later + 1, order_id="p2", amount=1.0))
    assert state.purchase_grain == 0 and state.purchases == [[later, 1.0], [later + 1, 1.0]]
