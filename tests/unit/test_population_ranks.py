"""A value's rank against a population sample is remembered between samples: what is
remembered is what ranking afresh gives, in the sample in use, whatever was asked before."""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from hypothesis import given, settings
from hypothesis import strategies as st

from segengine.rules.population import RANKS_KEPT, Population

# Small integers, as floats and as ints: ties with the sample, equal values of either type.
VALUES = st.one_of(st.integers(0, 12), st.integers(0, 12).map(float), st.floats(0, 12, allow_nan=False))
SAMPLES = st.lists(VALUES, min_size=3, max_size=40)


def afresh(sample: list[float], value: float) -> float:
    ordered = sorted(sample)
    below = bisect_left(ordered, value)
    return (below + (bisect_right(ordered, value) - below) / 2) / len(ordered)


@settings(max_examples=200, deadline=None)
@given(first=SAMPLES, second=SAMPLES, asked=st.lists(VALUES, min_size=1, max_size=30))
def test_a_remembered_rank_is_the_rank_in_the_sample_in_use(
    first: list[float], second: list[float], asked: list[float]
) -> None:
    population = Population(min_sample=3)
    for sample in (first, second, first):  # a new sample, then the first one again
        population.replace({"f": list(sample), "g": [v + 100 for v in sample]}, None)
        for value in [*asked, *asked]:  # each asked twice: the second time remembered
            assert population.pct_rank("f", value) == afresh(sample, value)
            assert population.pct_rank("g", value) == afresh([v + 100 for v in sample], value)
            assert population.quantile_score("f", value, 5) == min(5, 1 + int(afresh(sample, value) * 5))


def test_ranks_remembered_are_bounded_and_stay_exact_past_the_bound() -> None:
    sample = [float(i) for i in range(1000)]
    population = Population(min_sample=10)
    population.replace({"f": sample}, None)
    values = [i / 3 for i in range(RANKS_KEPT * 2 + 7)]
    for value in [*values, *values[:50]]:
        assert population.pct_rank("f", value) == afresh(sample, value)
    assert 0 < len(population._ranks["f"]) <= RANKS_KEPT
    assert population.pct_rank("f", None) is None
    assert population.pct_rank("missing", 3.0) is None
