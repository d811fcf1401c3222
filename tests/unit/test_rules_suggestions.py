"""`rules check` offers the closest known name for a misspelt feature, function, event field,
dimension or segment, in its one-line file:line:column format; and nothing when no name is close."""

from __future__ import annotations

import pytest

from segengine.rules import check_rules, parse_rules
from segengine.rules.names import did_you_mean
from segengine.rules.ruleset import RulesError


def problems(text: str) -> list[str]:
    rules, found = check_rules(text, "r.yaml")
    assert rules is None
    return found


def when(condition: str, features: str = "") -> str:
    return f'{features}dimensions:\n  d:\n    segments:\n      - name: x\n        when: "{condition}"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (when("spend_totl > 100"), "r.yaml:5:16: unknown feature 'spend_totl': did you mean 'spend_total'?"),
        (when("orders_30 >= 2"), "r.yaml:5:16: unknown feature 'orders_30': did you mean 'orders_30d'?"),
        (when("Spend_Total > 1"), "r.yaml:5:16: unknown feature 'Spend_Total': did you mean 'spend_total'?"),
        # a feature the file declares
        (when("big_spnder", "features:\n  big_spender: spend_365d > 1000\n"),
         "r.yaml:7:16: unknown feature 'big_spnder': did you mean 'big_spender'?"),
        # a misspelt name inside a declared feature
        ("features:\n  aov: spend_totl / orders_total\n" + when("aov > 1"),
         "r.yaml:2:8: unknown feature 'spend_totl': did you mean 'spend_total'?"),
        (when("day_since(last_purchase_ts) > 30"),
         "r.yaml:5:16: unknown function 'day_since': did you mean 'days_since'?"),
        (when("quantile_scor(spend_total, 5) == 5"),
         "r.yaml:5:16: unknown function 'quantile_scor': did you mean 'quantile_score'?"),
        # no close name: no suggestion
        (when("zilch > 1"), "r.yaml:5:16: unknown feature 'zilch'"),
        (when("median(spend_total) > 1"), "r.yaml:5:16: unknown function 'median'"),
        # the fields of an aggregation's events
        ("features:\n  n: {op: count, of: browse, where: \"actoin == 'view'\"}\n" + when("n > 1"),
         "r.yaml:2:38: unknown feature 'actoin': did you mean 'action'?"),
        ("features:\n  n: {op: distinct, of: browse, field: categroy}\n" + when("n > 1"),
         "r.yaml:2:40: browse events have no field 'categroy': did you mean 'category'?"),
    ],
    ids=["feature", "feature-suffix", "feature-case", "declared-feature", "in-a-derived-feature", "function",
         "population-function", "no-close-feature", "no-close-function", "event-field-in-where", "event-field"],
)  # fmt: skip
def test_a_misspelt_name_gets_the_closest_known_one(text: str, expected: str) -> None:
    assert problems(text) == [expected]


ACTIONS = """
dimensions:
  loyalty:
    segments:
      - {name: gold, when: spend_365d >= 1000}
      - {name: silver, when: spend_365d >= 300}
    default: bronze
actions:
  reward:
    on: {dimension: %s, to: %s}
    topic: actions.loyalty
"""


@pytest.mark.parametrize(
    ("dimension", "segment", "expected"),
    [
        ("loyality", "gold", "unknown dimension 'loyality': did you mean 'loyalty'?"),
        ("loyalty", "glod", "dimension 'loyalty' has no segment 'glod': did you mean 'gold'?"),
        ("loyalty", "Silver", "dimension 'loyalty' has no segment 'Silver': did you mean 'silver'?"),
        ("loyalty", "platinum", "dimension 'loyalty' has no segment 'platinum'"),
    ],
)
def test_an_action_naming_a_misspelt_dimension_or_segment_gets_the_closest_one(
    dimension: str, segment: str, expected: str
) -> None:
    with pytest.raises(RulesError) as refused:
        parse_rules(ACTIONS % (dimension, segment), "r.yaml")
    assert refused.value.problems == [f"r.yaml:10:9: action 'reward': {expected}"]


def test_did_you_mean_offers_one_close_name_or_nothing() -> None:
    assert did_you_mean("spend_totl", ["spend_total", "spend_7d"]) == ": did you mean 'spend_total'?"
    assert did_you_mean("x", ["spend_total"]) == ""
    assert did_you_mean("gold", ["gold"]) == ""  # the name itself is not a suggestion
    assert did_you_mean("a", []) == ""
