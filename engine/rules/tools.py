"""What marketers ask of rules, answered purely: why is a customer in a segment, and who
would move if the rules changed. The command line feeds these from Redis."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..state import CustomerState, Features
from .ruleset import RuleSet


def explain(rules: RuleSet, state: CustomerState, now: int) -> dict[str, Any]:
    """The customer's features, and per dimension: the segment now, the rule that matched
    and the values it read, next to the stored membership."""
    features = Features(state, now, rules.derived)
    dimensions = {}
    for dim in rules.dimensions:
        current = state.members.get(dim.name)
        move = dim.decide(features, current, now, state.member_since.get(dim.name), state.grace_since.get(dim.name))
        decision = dim.explain(move)
        dimensions[dim.name] = {
            "stored": current,
            "segment": decision.segment,
            "reason": decision.reason,
            "read": decision.read,
        }
    values = {k: round(v, 4) if isinstance(v, float) else v for k, v in features.all().items()}
    return {"now": now, "rules_version": rules.version, "features": values, "dimensions": dimensions}


def simulate(
    rules: RuleSet, states: Iterable[CustomerState], now: int
) -> dict[str, Counter[tuple[str | None, str | None]]]:
    """Per dimension, (current segment, segment under ``rules``) -> customers; nothing emitted."""
    matrix: dict[str, Counter[tuple[str | None, str | None]]] = {dim.name: Counter() for dim in rules.dimensions}
    for state in states:
        features = Features(state, now, rules.derived)
        for dim in rules.dimensions:
            current = state.members.get(dim.name)
            move = dim.decide(features, current, now, state.member_since.get(dim.name), state.grace_since.get(dim.name))
            matrix[dim.name][(current, move.segment)] += 1
    return matrix
