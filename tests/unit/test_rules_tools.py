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


def test_simulate_counts_who_would_move() -> None:
    states = [customer(120.0, "big"), customer(70.0, "small"), customer(60.0, "small"), customer(10.0, "small")]
    matrix = simulate(LOWER, states, DAY_MS)
    assert dict(matrix["tier"]) == {("big", "big"): 1, ("small", "big"): 2, ("small", "small"): 1}
    assert (
        all(s.members["tier"] in ("big", "small") for s in states) and states[1].members["tier"] == "small"
    )  # nothing changed
