"""What marketers ask of rules, answered purely: why is a customer in a segment, and who
would move if the rules changed. The command line feeds these from Redis (``simulate``
through segengine.rules.preview)."""

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


Moves = dict[str, Counter[tuple[str | None, str | None]]]  # dimension -> (from, to) -> customers
Move = tuple[str, str | None, str | None]  # dimension, from, to


def compare(rules: RuleSet, baseline: RuleSet, state: CustomerState, now: int) -> list[Move]:
    """The customer's moves if ``rules`` replaced ``baseline``: (dimension, segment under the
    baseline, segment under ``rules``) where they differ. Both decide at ``now`` from the same
    stored state (membership, dwell, grace), so neither time passing since the customer was
    last decided nor a stored segment behind the live rules counts as a move. A dimension the
    baseline lacks starts from the stored membership (a new dimension: none)."""
    new_features = Features(state, now, rules.derived)
    old_features = Features(state, now, baseline.derived) if baseline is not rules else new_features
    live = {dim.name: dim for dim in baseline.dimensions}
    moves = []
    for dim in rules.dimensions:
        name = dim.name
        current, since, grace = state.members.get(name), state.member_since.get(name), state.grace_since.get(name)
        new = dim.decide(new_features, current, now, since, grace).segment
        before = live.get(name)
        old = current if before is None else before.decide(old_features, current, now, since, grace).segment
        if new != old:
            moves.append((name, old, new))
    return moves


def simulate(rules: RuleSet, states: Iterable[CustomerState], now: int, baseline: RuleSet) -> Moves:
    """Per dimension of ``rules``, (segment under ``baseline``, segment under ``rules``) ->
    customers, counting only those who would move (see ``compare``); nothing is emitted."""
    matrix: Moves = {dim.name: Counter() for dim in rules.dimensions}
    for state in states:
        for name, old, new in compare(rules, baseline, state, now):
            matrix[name][(old, new)] += 1
    return matrix
