"""`rules check`: every kind of error, with its exact line and column; and hysteresis."""

from __future__ import annotations

import pytest

from segengine.rules import check_rules, parse_rules
from segengine.state import DAY_MS


def problems(text: str) -> list[str]:
    rules, found = check_rules(text, "r.yaml")
    assert rules is None
    return found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown feature: the column of the name inside the condition
        ("dimensions:\n  d:\n    segments:\n      - name: x\n        when: orders_total > 1 and nope > 2\n",
         "r.yaml:5:36: unknown feature 'nope'"),
        # unknown function
        ("dimensions:\n  d:\n    segments:\n      - name: x\n        when: 'median(orders_total) > 1'\n",
         "r.yaml:5:16: unknown function 'median'"),
        # type mismatch: a number compared with a string
        ("dimensions:\n  d:\n    segments:\n      - name: x\n        when: spend_total > 'lots'\n",
         "r.yaml:5:29: type mismatch: comparing a number with a string (\"'lots'\")"),
        # unreachable segment after one that always matches
        ("dimensions:\n  d:\n    segments:\n      - {name: x, when: 'true'}\n      - {name: y, when: orders_total > 1}\n",
         "r.yaml:5:9: unreachable segment 'y': 'x' before it always matches"),
        # unreachable segment: the same condition as an earlier one
        ("dimensions:\n  d:\n    segments:\n      - {name: x, when: orders_total > 1}\n      - {name: y, when: orders_total > 1}\n",
         "r.yaml:5:9: unreachable segment 'y': same condition as an earlier segment"),
        # dependency cycle between derived features
        ("features:\n  a: b + 1\n  b: a * 2\ndimensions:\n  d:\n    segments:\n      - {name: x, when: a > 1}\n",
         "r.yaml:2:3: dependency cycle: a -> b -> a"),
        # bad duration
        ("dimensions:\n  d:\n    segments:\n      - name: x\n        when: orders_total > 1\n        min_dwell: 3 weeks\n",
         "r.yaml:6:20: bad duration '3 weeks': use a number and s, m, h, d or w (e.g. 14d)"),
        # duplicate names: segments, dimensions, features
        ("dimensions:\n  d:\n    segments:\n      - {name: x, when: orders_total > 1}\n      - {name: x, when: orders_total > 2}\n",
         "r.yaml:5:16: duplicate segment 'x'"),
        ("dimensions:\n  d:\n    segments: [{name: x, when: 'true'}]\n  d:\n    segments: [{name: y, when: 'true'}]\n",
         "r.yaml:4:3: duplicate dimension 'd'"),
        ("features:\n  orders_total: 1\ndimensions:\n  d:\n    segments: [{name: x, when: 'true'}]\n",
         "r.yaml:2:3: duplicate feature name 'orders_total'"),
        # syntax error inside a condition
        ("dimensions:\n  d:\n    segments:\n      - name: x\n        when: orders_total >\n",
         "r.yaml:5:29: syntax error: the condition ends too early"),
    ],
    ids=["unknown-feature", "unknown-function", "type-mismatch", "unreachable-after-true", "unreachable-same-condition",
         "cycle", "bad-duration", "duplicate-segment", "duplicate-dimension", "duplicate-feature", "syntax"],
)  # fmt: skip
def test_each_error_kind_names_its_line_and_column(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_all_problems_are_reported_at_once() -> None:
    found = problems(
        "dimensions:\n  d:\n    segments:\n      - {name: x, when: nope > 1}\n      - {name: y, when: zilch > 1}\n"
    )
    assert found == ["r.yaml:4:25: unknown feature 'nope'", "r.yaml:5:25: unknown feature 'zilch'"]


def test_shipped_rules_files_are_valid() -> None:
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "rules").glob("*.yaml")):
        rules, found = check_rules(path.read_text(), str(path), folder=path.parent)  # its model: beside it
        assert found == [] and rules is not None, found


LOYALTY = """
features:
  points: spend_365d
dimensions:
  loyalty:
    segments:
      - name: gold
        enter: points >= 5000
        stay: points >= 4000
        exit_grace: 14d
      - name: silver
        when: points >= 1000
        min_dwell: 30d
    default: bronze
"""


class Customer:
    """Just enough of the evaluation loop to drive one dimension by hand."""

    def __init__(self) -> None:
        self.rules = parse_rules(LOYALTY)
        self.dim = self.rules.dimensions[0]
        self.segment: str | None = None
        self.since: int | None = None
        self.grace: int | None = None

    def at(self, now: int, points: float) -> str | None:
        features = {"points": points}
        move = self.dim.decide(features, self.segment, now, self.since, self.grace)
        self.grace = move.grace_started
        if move.segment != self.segment:
            self.segment, self.since = move.segment, now
        return self.segment


def test_enter_and_stay_thresholds_differ() -> None:
    c = Customer()
    assert c.at(0, 4500) == "silver"  # not enough to enter gold
    assert c.at(DAY_MS, 5000) == "gold"  # promoted at once
    assert c.at(2 * DAY_MS, 4200) == "gold"  # stays while >= 4000


def test_exit_grace_demotes_only_after_the_grace_period() -> None:
    c = Customer()
    c.at(0, 6000)
    assert c.at(DAY_MS, 3000) == "gold"  # stay failed: grace starts
    assert c.at(10 * DAY_MS, 3000) == "gold"
    assert c.at(15 * DAY_MS - 1, 3000) == "gold"
    assert c.at(15 * DAY_MS, 3000) == "silver"  # 14 days after stay first failed


def test_stay_holding_again_resets_the_grace() -> None:
    c = Customer()
    c.at(0, 6000)
    c.at(DAY_MS, 3000)
    assert c.at(5 * DAY_MS, 4500) == "gold" and c.grace is None
    c.at(6 * DAY_MS, 3000)
    assert c.at(19 * DAY_MS, 3000) == "gold"  # a new grace period began on day 6
    assert c.at(20 * DAY_MS, 3000) == "silver"


def test_min_dwell_holds_back_exits_but_not_promotions() -> None:
    c = Customer()
    assert c.at(0, 1500) == "silver"
    assert c.at(10 * DAY_MS, 0) == "silver"  # within 30 days of entering
    assert c.at(30 * DAY_MS, 0) == "bronze"
    c = Customer()
    c.at(0, 1500)
    assert c.at(DAY_MS, 9000) == "gold"  # up at once, dwell or not


def test_derived_features_and_time_functions() -> None:
    rules = parse_rules(
        "features:\n  aov: spend_total / orders_total\n"
        "dimensions:\n  d:\n    segments:\n"
        "      - {name: big, when: 'aov >= 100 and days_since(last_purchase_ts) < 30'}\n    default: other\n"
    )
    from segengine.state import CustomerState, Features

    state = CustomerState()
    state.orders, state.spend, state.last_purchase = 2, 300.0, 0
    assert rules.evaluate(Features(state, 10 * DAY_MS, rules.derived), {}, 10 * DAY_MS)["d"].segment == "big"
    assert rules.evaluate(Features(state, 31 * DAY_MS, rules.derived), {}, 31 * DAY_MS)["d"].segment == "other"
    state.orders = 0  # division by zero is null: no match
    assert rules.evaluate(Features(state, DAY_MS, rules.derived), {}, DAY_MS)["d"].segment == "other"
