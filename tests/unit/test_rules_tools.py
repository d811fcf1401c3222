"""`rules explain` and `rules simulate`, pure."""

from __future__ import annotations

from segengine.rules import parse_rules
from segengine.rules.tools import explain, simulate
from segengine.state import DAY_MS, CustomerState

RULES = parse_rules(
    "name: t\ndimensions:\n  tier:\n    segments:\n      - {name: big, when: spend_total >= 100}\n    default: small\n"
)
LOWER = parse_rules(
    "name: t2\ndimensions:\n  tier:\n    segments:\n      - {name: big, when: spend_total >= 50}\n    default: small\n"
)


def customer(spend: float, segment: str | None) -> CustomerState:
    state = CustomerState()
    state.orders, state.spend = 1, spend
    if segment:
        state.members["tier"] = segment
    return state


def test_explain_names_the_rule_and_the_values_it_read() -> None:
    report = explain(RULES, customer(120.0, "small"), DAY_MS)
    tier = report["dimensions"]["tier"]
    assert (tier["stored"], tier["segment"], tier["read"]) == ("small", "big", {"spend_total": 120.0})
    assert tier["reason"] == "tier.big: spend_total >= 100"
    assert report["features"]["spend_total"] == 120.0 and report["rules_version"].startswith("t@")


def test_simulate_counts_only_who_would_move_from_what_the_live_rules_give() -> None:
    # the 120 stored as "small" is behind the live rules (not decided again yet): no move of this change's
    states = [customer(120.0, "small"), customer(70.0, "small"), customer(60.0, "small"), customer(10.0, "small")]
    assert dict(simulate(LOWER, states, DAY_MS, RULES)["tier"]) == {("small", "big"): 2}
    assert dict(simulate(RULES, states, DAY_MS, RULES)["tier"]) == {}  # the rules in force move nobody
    assert [s.members["tier"] for s in states] == ["small"] * 4  # nothing changed
