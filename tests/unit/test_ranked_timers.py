"""Time moves population-relative scores too: a customer's recency quintile drops as the
days since the last purchase pass the population's values, with no event. The next check
the timers compute is exactly the moment the score changes (brute force over time)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from segengine.rules import parse_rules
from segengine.rules.population import Population
from segengine.state import DAY_MS, CustomerState, Features
from segengine.timers import _whole_ms, next_check, next_rank_change

RULES = """
population:
  min_sample: 1   # rank against the drawn samples, however small
features:
  r: quantile_score(days_since_last_purchase, 5)
  p: pct_rank(days_since_last_purchase)
dimensions:
  recency:
    segments:
      - {name: "1", when: r == 1}
      - {name: "2", when: r == 2}
      - {name: "3", when: r == 3}
      - {name: "4", when: r == 4}
      - {name: "5", when: r == 5}
    default: unscored
"""


@settings(max_examples=300, deadline=None)
@given(
    sample=st.lists(
        st.one_of(st.integers(0, 400 * DAY_MS).map(lambda ms: ms / DAY_MS), st.integers(0, 30).map(float)),
        min_size=1,
        max_size=40,
    ),
    start_days=st.floats(0, 300),
)
def test_the_next_check_is_when_the_quintile_changes(sample: list[float], start_days: float) -> None:
    rules = parse_rules(RULES)
    rules.population.replace({"days_since_last_purchase": sample}, 0)
    state = CustomerState()
    state.last_purchase = 1_000 * DAY_MS
    now = state.last_purchase + int(start_days * DAY_MS)
    for _ in range(50):
        score = Features(state, now, rules.derived)["r"]
        due = next_check(rules.time_plan, state, now)
        if due is None:  # past every population value: the score is final
            assert Features(state, now + 10_000 * DAY_MS, rules.derived)["r"] == score
            return
        assert due > now
        assert Features(state, due - 1, rules.derived)["r"] == score or due - 1 == now
        assert Features(state, due, rules.derived)["r"] != score  # it moves exactly then
        now = due
    raise AssertionError("more changes than a quintile score can make")


def test_a_plan_without_population_scores_has_no_ranked_ages() -> None:
    rules = parse_rules("dimensions:\n  d:\n    segments:\n      - {name: x, when: days_since_last_purchase > 3}\n")
    assert not rules.time_plan.ranked_ages and rules.time_plan.population is None


AGE_RULES = RULES.replace("days_since_last_purchase", "customer_age_days")


@settings(max_examples=300, deadline=None)
@given(
    sample=st.lists(
        st.one_of(st.integers(0, 400 * DAY_MS).map(lambda ms: ms / DAY_MS), st.integers(0, 30).map(float)),
        min_size=1,
        max_size=40,
    ),
    first_ms=st.integers(0, DAY_MS - 1),
    start_days=st.floats(0, 300),
)
def test_the_next_check_is_when_the_customer_age_quintile_changes(
    sample: list[float], first_ms: int, start_days: float
) -> None:
    """customer_age_days counts whole UTC days: its score moves at a midnight, past or at a
    population value."""
    rules = parse_rules(AGE_RULES)
    rules.population.replace({"customer_age_days": sample}, 0)
    state = CustomerState()
    state.first_purchase = state.last_purchase = 1_000 * DAY_MS + first_ms
    now = state.first_purchase + int(start_days * DAY_MS)
    for _ in range(50):
        score = Features(state, now, rules.derived)["r"]
        due = next_check(rules.time_plan, state, now)
        if due is None:
            assert Features(state, now + 10_000 * DAY_MS, rules.derived)["r"] == score
            return
        assert due > now and due % DAY_MS == 0
        assert Features(state, due - 1, rules.derived)["r"] == score or due - 1 == now
        assert Features(state, due, rules.derived)["r"] != score
        now = due
    raise AssertionError("more changes than a quintile score can make")


def _next_change_by_hand(population: Population, value: float, n: int | None) -> tuple[float, bool] | None:
    """The first population value at or past ``value`` where the score moves: on reaching it,
    or just past it (read with the scores themselves, one value after another)."""

    def score(x: float) -> float | None:
        return population.pct_rank("f", x) if n is None else population.quantile_score("f", x, n)

    now = score(value)
    for point in sorted(set(population.samples["f"])):
        if point > value and score(point) != now:
            return point, False
        if point >= value and score(math.nextafter(point, math.inf)) != now:
            return point, True
    return None


@settings(max_examples=500, deadline=None)
@given(
    sample=st.lists(st.integers(0, 60).map(lambda x: x / 4), min_size=1, max_size=60),
    value=st.integers(-4, 70).map(lambda x: x / 4),
    n=st.sampled_from([None, 2, 4, 5, 10]),
)
def test_the_next_rank_change_is_the_first_value_where_the_score_moves(
    sample: list[float], value: float, n: int | None
) -> None:
    population = Population(min_sample=1)
    population.replace({"f": sample}, 0)
    assert next_rank_change(population.samples["f"], value, n) == _next_change_by_hand(population, value, n)


@given(st.floats(min_value=-1e15, max_value=1e15, allow_nan=False))
def test_whole_ms_is_the_isclose_rounding(at: float) -> None:
    """``_whole_ms`` writes math.isclose out (the compiled core would call it with keyword
    arguments): the same answer on every finite value, and on values near whole ms."""
    for value in (at, round(at) + at % 1e-6, round(at) - 1e-7, round(at) + 1e-5):
        whole = round(value)
        expected = whole if math.isclose(value, whole, rel_tol=1e-12, abs_tol=1e-6) else value
        assert _whole_ms(value) == expected
        assert type(_whole_ms(value)) is type(expected)
