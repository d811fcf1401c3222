"""The lifetime purchase summary (lifetimes' frequency, recency, T and monetary value, daily
periods) kept in O(1) state: its update rules, and property tests against a batch computation
over the raw purchases in the arrival orders it is exact for. Pure: no I/O."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from segengine.events import Event, Source
from segengine.folding import apply
from segengine.rules import check_rules
from segengine.state import DAY_BITS, DAY_MS, HOUR_MS, TIME_DEPENDENT, CustomerState, Features, changed_by

D0 = 1_600_000_000_000 // DAY_MS  # a UTC day
HORIZON = 7 * DAY_MS
SUMMARY = ("repeat_purchase_days", "purchase_recency_days", "customer_age_days", "repeat_purchase_value")
_offsets = iter(range(10**9))


def ev(type_: str, ts: int, **body: Any) -> Event:
    offset = next(_offsets)
    return Event(f"e{offset}", "c1", type_, ts, body, Source("events.purchase", 0, offset))


def bought(day: int, amount: float, hour: int = 12) -> Event:
    """A purchase on day ``D0 + day`` (at ``hour`` UTC)."""
    return ev("purchase", (D0 + day) * DAY_MS + hour * HOUR_MS, order_id="o", amount=amount)


def fold(*events: Event, state: CustomerState | None = None) -> CustomerState:
    state = state or CustomerState()
    for e in events:
        apply(state, e, dedupe_horizon_ms=HORIZON)
    return state


def summary(state: CustomerState, day: int) -> tuple[Any, ...]:
    """The four features at noon on day ``D0 + day``."""
    features = Features(state, (D0 + day) * DAY_MS + 12 * HOUR_MS)
    return tuple(features[name] for name in SUMMARY)


def batch(purchases: list[tuple[int, float]], now_day: int) -> tuple[int, int, int, float]:
    """lifetimes' summary_data_from_transaction_data (freq="D"), written out: one customer's
    purchases on one day are one purchase of their total; the first day is not a repeat."""
    per_day: dict[int, float] = defaultdict(float)
    for day, amount in purchases:
        per_day[day] += amount
    first, last = min(per_day), max(per_day)
    repeat = [total for day, total in per_day.items() if day != first]
    return len(repeat), last - first, now_day - first, sum(repeat) / len(repeat) if repeat else 0.0


def assert_summary(state: CustomerState, purchases: list[tuple[int, float]], now_day: int) -> None:
    frequency, recency, age, value = summary(state, now_day)
    want = batch(purchases, now_day)
    assert (frequency, recency, age) == want[:3]
    assert value == pytest.approx(want[3], rel=1e-12, abs=1e-9)


# -- the update rules ------------------------------------------------------------------------


def test_no_purchase_no_summary() -> None:
    state = fold(ev("browse", D0 * DAY_MS, action="view"))
    assert summary(state, 5) == (None, None, None, None)


def test_purchases_in_time_order() -> None:
    state = fold(bought(0, 10.0), bought(3, 20.0), bought(10, 40.0))
    assert summary(state, 30) == (2, 10, 30, 30.0)  # the first day's 10 is not in the mean


def test_one_purchase_day_has_a_repeat_value_of_zero() -> None:
    state = fold(bought(0, 10.0, hour=1), bought(0, 5.0, hour=23))
    assert summary(state, 0) == (0, 0, 0, 0.0)
    assert state.day1_spend == 15.0


def test_purchases_on_one_day_are_one_purchase_of_their_total() -> None:
    state = fold(bought(0, 10.0), bought(2, 20.0, hour=1), bought(2, 5.0, hour=23), bought(4, 15.0))
    assert summary(state, 4) == (2, 4, 4, 20.0)  # days 2 and 4: 25 and 15


def test_a_late_purchase_before_the_first_day_makes_the_old_first_day_a_repeat() -> None:
    state = fold(bought(10, 30.0), bought(12, 50.0), bought(0, 7.0))
    assert summary(state, 20) == (2, 12, 20, 40.0)  # repeat days 10 and 12
    assert state.day1_spend == 7.0
    fold(bought(0, 3.0, hour=2), state=state)  # the new first day again: its total grows
    assert summary(state, 20) == (2, 12, 20, 40.0) and state.day1_spend == 10.0


def test_a_late_purchase_on_the_first_day_adds_to_it() -> None:
    state = fold(bought(0, 10.0, hour=20), bought(5, 30.0), bought(0, 2.0, hour=1))
    assert summary(state, 5) == (1, 5, 5, 30.0) and state.day1_spend == 12.0


def test_a_late_purchase_within_the_mask_counts_a_day_once() -> None:
    state = fold(bought(0, 1.0), bought(60, 2.0), bought(100, 4.0))
    fold(bought(60, 6.0, hour=3), state=state)  # a day already counted: its total grows
    assert summary(state, 100) == (2, 100, 100, 6.0)  # (8 + 4) / 2
    fold(bought(80, 3.0), state=state)  # a new day between: one more repeat day
    assert summary(state, 100) == (3, 100, 100, 5.0)  # (8 + 4 + 3) / 3
    fold(bought(100 - DAY_BITS, 5.0), state=state)  # the oldest day the mask holds
    assert summary(state, 100) == (4, 100, 100, 5.0)  # (8 + 4 + 3 + 5) / 4
    fold(bought(100 - DAY_BITS, 1.0, hour=20), state=state)
    assert summary(state, 100) == (4, 100, 100, 5.25)


def test_the_mask_follows_the_last_day() -> None:
    state = fold(bought(0, 1.0), bought(1, 1.0))
    assert state.day_mask == 0b1  # day 0: the day before the last
    fold(bought(4, 1.0), state=state)
    assert state.day_mask == 0b1100  # days 1 and 0: 3 and 4 days before day 4
    fold(bought(4 + DAY_BITS, 1.0), state=state)
    assert state.day_mask == 1 << (DAY_BITS - 1)  # day 4 only: day 1 is past the mask
    fold(bought(4 + 2 * DAY_BITS + 1, 1.0), state=state)
    assert state.day_mask == 0  # the previous last day too


def test_a_late_purchase_older_than_the_mask_in_an_empty_stretch_is_a_new_day() -> None:
    last = DAY_BITS + 100
    state = fold(bought(0, 1.0), bought(last, 2.0), bought(40, 3.0))  # no day in (0, 100) before
    assert summary(state, last) == (2, last, last, 2.5)
    fold(bought(41, 1.0), state=state)  # one of the 99 days held: 41 is taken as new, and it is
    assert summary(state, last) == (3, last, last, 2.0)


def test_a_late_purchase_older_than_the_mask_in_a_full_stretch_is_not_a_new_day() -> None:
    days = list(range(DAY_BITS + 5))  # every day: the stretch (0, 4) is days 1 to 3, all held
    state = fold(*(bought(d, 1.0) for d in days))
    fold(bought(2, 10.0, hour=20), state=state)
    assert_summary(state, [(d, 1.0) for d in days] + [(2, 10.0)], days[-1])


def test_a_late_purchase_in_a_partly_held_stretch_is_placed_by_the_purchase_days() -> None:
    """Days 1 and 2 of the stretch before the mask held, day 3 not: a late purchase on day 1
    is not a new day, one on day 3 is; two late purchases on one old day make one."""
    last = DAY_BITS + 4
    state = fold(bought(0, 1.0), bought(1, 1.0), bought(2, 1.0), bought(last, 1.0))
    again = fold(bought(1, 1.0, hour=20), state=CustomerState.loads(state.dumps()))
    assert summary(again, last)[0] == 3
    new_day = fold(bought(3, 1.0), state=CustomerState.loads(state.dumps()))
    assert summary(new_day, last)[0] == 4
    assert summary(new_day, last)[1:3] == (last, last)
    last = DAY_BITS + 100
    twice = fold(bought(0, 1.0), bought(last, 2.0), bought(40, 3.0), bought(40, 1.0, hour=20))
    assert summary(twice, last)[0] == 2
    assert round(twice.spend - twice.day1_spend, 2) == 6.0


def test_refunds_do_not_change_the_summary() -> None:
    state = fold(bought(0, 10.0), bought(3, 20.0))
    before = summary(state, 5)
    fold(ev("refund", (D0 + 3) * DAY_MS + 13 * HOUR_MS, order_id="o", amount=20.0), state=state)
    assert summary(state, 5) == before
    assert Features(state, (D0 + 5) * DAY_MS)["net_spend_total"] == 10.0


def test_a_repeated_event_counts_once() -> None:
    purchase = bought(3, 20.0)
    state = fold(bought(0, 10.0), purchase)
    again = Event(purchase.event_id, "c1", "purchase", purchase.ts, purchase.body, Source("events.purchase", 0, 10**9))
    fold(again, state=state)
    assert summary(state, 3) == (1, 3, 3, 20.0)


def test_an_erase_clears_the_summary() -> None:
    state = fold(bought(0, 10.0), bought(3, 20.0), bought(5, 30.0))
    fold(ev("erase", (D0 + 6) * DAY_MS), state=state)
    assert (state.day1_spend, state.repeat_days, state.day_mask) == (0.0, 0, 0)
    assert summary(state, 6) == (None, None, None, None)
    fold(bought(7, 4.0), state=state)  # a new history from the purchase after the erase
    assert summary(state, 8) == (0, 0, 1, 0.0) and state.day1_spend == 4.0


def test_the_summary_round_trips_through_the_stored_document() -> None:
    state = fold(bought(0, 10.0), bought(3, 20.0), bought(DAY_BITS + 9, 30.0))
    again = CustomerState.loads(state.dumps())
    assert (again.day1_spend, again.repeat_days, again.day_mask) == (10.0, 2, state.day_mask)
    assert summary(again, 90) == summary(state, 90)


def _as_stored_before(state: CustomerState) -> bytes:
    """The state's document as a version without the summary fields stored it."""
    doc = {name: value for name, value in state.__dict__.items() if name not in ("pending", "outbox_writer")}
    doc["offsets"] = {f"{tp.topic}:{tp.partition}": offset for tp, offset in state.offsets.items()}
    for name in ("day1_spend", "repeat_days", "day_mask"):
        del doc[name]
    return orjson.dumps(doc)  # a JSON document under the full names, as versions before stored it


def test_a_state_stored_before_the_summary_gets_it_from_its_purchase_days_and_detail() -> None:
    state = fold(bought(0, 10.0), bought(0, 2.0), bought(3, 20.0), bought(70, 30.0), bought(71, 1.0))
    old = CustomerState.loads(_as_stored_before(state))
    assert (old.day1_spend, old.repeat_days, old.day_mask) == (12.0, 3, state.day_mask)
    assert summary(old, 80) == summary(state, 80) == (3, 71, 80, 17.0)


def test_a_state_stored_before_the_summary_without_its_first_day_has_no_repeat_value() -> None:
    state = fold(bought(0, 10.0), bought(400, 20.0), bought(405, 30.0))  # day 0 is out of the detail
    assert len(state.purchases) == 2
    old = CustomerState.loads(_as_stored_before(state))
    assert old.day1_spend is None
    assert summary(old, 410) == (2, 405, 410, None)
    fold(bought(406, 5.0), state=old)
    assert summary(old, 410) == (3, 406, 410, None)
    fold(bought(-1, 1.0), state=old)  # an earlier first day: the old one's total is spend's remainder
    assert summary(old, 410) == (4, 407, 411, pytest.approx(65.0 / 4))


def test_a_state_without_purchases_loads_as_it_was() -> None:
    state = fold(ev("browse", D0 * DAY_MS, action="view"))
    old = CustomerState.loads(_as_stored_before(state))
    assert (old.day1_spend, old.repeat_days, old.day_mask) == (0.0, 0, 0)


# -- against the batch summary ------------------------------------------------------------------

amounts = st.integers(0, 50_000).map(lambda cents: cents / 100)
hours = st.integers(0, 23)


@settings(max_examples=300, deadline=None)
@given(
    drawn=st.lists(st.tuples(st.integers(0, 1500), amounts, hours, st.integers(0, DAY_BITS)), min_size=1, max_size=40)
)
def test_purchases_at_most_the_mask_behind_the_latest_day_are_exact(drawn: list[tuple[int, float, int, int]]) -> None:
    """Each purchase arrives up to DAY_BITS days after its day (in the order of day + lateness):
    never more than DAY_BITS days behind the latest purchase day so far."""
    arrival = sorted(drawn, key=lambda p: p[0] + p[3])
    state = fold(*(bought(day, amount, hour) for day, amount, hour, _ in arrival))
    purchases = [(day, amount) for day, amount, _, _ in drawn]
    assert_summary(state, purchases, max(day for day, _ in purchases) + 3)


@settings(max_examples=300, deadline=None)
@given(
    drawn=st.lists(st.tuples(st.integers(0, DAY_BITS), amounts, hours), min_size=1, max_size=40).flatmap(
        st.permutations
    )
)
def test_purchases_within_the_mask_s_span_are_exact_in_any_order(drawn: list[tuple[int, float, int]]) -> None:
    state = fold(*(bought(day, amount, hour) for day, amount, hour in drawn))
    assert_summary(state, [(day, amount) for day, amount, _ in drawn], DAY_BITS + 10)


# Late purchases before the first day, in the mask, and in stretches before it that are
# empty, full or partly held: days in two dense clusters DAY_BITS apart, or in sparse ones.
dense = st.one_of(st.integers(0, 2), st.integers(64, 67))
sparse = st.one_of(st.integers(0, 6), st.sampled_from([66, 100, 250, 400]).flatmap(lambda d: st.integers(d, d + 3)))
histories = st.one_of(*(st.lists(st.tuples(days, amounts, hours), min_size=1, max_size=25) for days in (dense, sparse)))


@settings(max_examples=500, deadline=None)
@given(drawn=histories.flatmap(st.permutations))
@example(drawn=[(0, 1.0, 0), (1, 1.0, 0), (2, 1.0, 0), (3, 1.0, 0), (67, 1.0, 0), (2, 1.0, 0)])  # a full stretch
@example(drawn=[(0, 1.0, 0), (100, 1.0, 0), (20, 1.0, 0), (21, 1.0, 0)])  # an empty one, then partly held
def test_any_order_against_the_batch_summary(drawn: list[tuple[int, float, int]]) -> None:
    """In any order, all four values and the first day's total are exact."""
    state = fold(*(bought(day, amount, hour) for day, amount, hour in drawn))
    purchases = [(day, amount) for day, amount, _ in drawn]
    frequency, recency, age, value = summary(state, 500)
    want = batch(purchases, 500)
    assert (recency, age) == want[1:3]
    first = min(day for day, _ in purchases)
    assert state.day1_spend == pytest.approx(sum(a for d, a in purchases if d == first), abs=1e-9)
    assert round(state.spend - state.day1_spend, 2) == pytest.approx(sum(a for d, a in purchases if d != first))
    assert frequency == want[0]
    assert value == pytest.approx(want[3], rel=1e-12, abs=1e-9)


def test_the_features_are_numbers_changed_by_purchases_and_the_age_by_time_too() -> None:
    rules, problems = check_rules(
        """
dimensions:
  clv:
    segments:
      - {name: loyal, when: "repeat_purchase_days >= 3 and repeat_purchase_value > 20"}
      - {name: lapsing, when: "customer_age_days - purchase_recency_days > 90"}
    default: other
""",
        "t.yaml",
    )
    assert rules is not None, problems
    for name in SUMMARY:
        assert changed_by(name) == {"purchase", "erase"}
    assert TIME_DEPENDENT & set(SUMMARY) == {"customer_age_days"}
