"""Which features depend on which.

Derived features are compiled dependencies first, so that each condition is checked
against the types of what it reads; a dependency cycle is an error. From the finished
conditions follow what a dimension reads in the end: the stored features behind the
derived ones, the event types that can change them, and whether time alone can.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

from ..aggregates import Aggregate
from ..clv.features import CHANGED_BY as PREDICTION_TRIGGERS
from ..clv.features import CHANGED_BY_TIME as PREDICTIONS_IN_TIME
from ..clv.features import PREDICTED
from ..state import TIME_DEPENDENT, changed_by
from ..timers import (
    AGE,
    AGGREGATE_WINDOW,
    BROWSE_WINDOW,
    BROWSE_WINDOW_OF,
    COMPLAINTS,
    HOLD,
    PREDICTED_MOVE,
    PURCHASE_WINDOW,
    PURCHASE_WINDOW_OF,
    RANKED,
    move,
)
from .expr import ANY, Expression, TypeOf, population_features, uses_time
from .ruleset import CURRENT, Segment


def in_dependency_order(
    names: Iterable[str],
    compile_one: Callable[[str, TypeOf], Expression | None],
    known: TypeOf,
    on_cycle: Callable[[list[str]], None],
) -> dict[str, Expression]:
    """Compile each derived feature (``compile_one(name, type_of)``) after the derived
    features it reads, in that order; ``known`` types every other name. A cycle is told to
    ``on_cycle`` as the names along it (the first one again at the end), where it closes;
    a feature that does not compile is left out, and what reads it compiles as reading
    something unknown."""
    order = list(names)
    pending = set(order)
    types: dict[str, str] = {}
    compiled: dict[str, Expression] = {}
    visiting: list[str] = []

    def visit(name: str) -> str | None:
        if name in types:
            return types[name]
        if name in visiting:
            on_cycle([*visiting[visiting.index(name) :], name])
            return None
        visiting.append(name)
        expression = compile_one(name, lambda n: visit(n) if n in pending else known(n))
        visiting.pop()
        types[name] = ANY  # derived features may hold anything
        if expression is None:
            return None
        compiled[name] = expression
        return ANY

    for name in order:
        visit(name)
    return compiled


def base_features(names: Iterable[str], derived: Mapping[str, Expression]) -> set[str]:
    """The stored features these names read, through derived features."""
    found: set[str] = set()
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen or name == CURRENT:
            continue
        seen.add(name)
        if name in derived:
            todo.extend(derived[name].names)
        else:
            found.add(name)
    return found


def derived_used(expressions: Iterable[Expression], derived: Mapping[str, Expression]) -> set[str]:
    """The derived features these expressions read, directly or through one another."""
    found: set[str] = set()
    todo = [n for e in expressions for n in e.names if n in derived]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(n for n in derived[name].names if n in derived)
    return found


def triggers(
    names: Collection[str], derived: Mapping[str, Expression], aggregates: Mapping[str, Aggregate]
) -> frozenset[str]:
    """Event types that can change any of these features, through derived ones too."""
    return frozenset().union(*(_changed_by(n, aggregates) for n in base_features(names, derived)))


def _changed_by(name: str, aggregates: Mapping[str, Aggregate]) -> frozenset[str]:
    if name in aggregates:
        return aggregates[name].triggers | {"erase"}
    return PREDICTION_TRIGGERS if name in PREDICTED else changed_by(name)


def segment_reads(segments: list[Segment], derived: Mapping[str, Expression]) -> tuple[list[Expression], set[str]]:
    """The expressions the segments' conditions evaluate (each once, ``when`` being both enter
    and stay, with the derived features they read) and the stored features behind them."""
    expressions = list({id(x): x for s in segments for x in (s.enter, s.stay)}.values())
    used = [*expressions, *(derived[n] for n in derived_used(expressions, derived))]
    return used, base_features(set().union(*(e.names for e in expressions)) if expressions else set(), derived)


def timer_triggers(
    name: str, segments: list[Segment], derived: Mapping[str, Expression], aggregates: Mapping[str, Aggregate]
) -> frozenset[str] | None:
    """What moving at a moment can change the dimension's answer (segengine.timers.next_moment
    names what moves); None: anything may (a time-dependent read not named here), so every
    moment decides it again."""
    found: set[str] = set()
    if any(s.min_dwell_ms or s.exit_grace_ms for s in segments):
        found.add(move(HOLD, name))
    used, names = segment_reads(segments, derived)
    if any(uses_time(e) for e in used):
        found.add(AGE)
    if any(population_features(e) for e in used):
        found.add(RANKED)
    for feature in names:
        if feature in aggregates:
            if aggregates[feature].window_ms is not None:
                found.add(move(AGGREGATE_WINDOW, feature))
        elif feature in PREDICTIONS_IN_TIME:
            found.add(PREDICTED_MOVE)
        elif feature in TIME_DEPENDENT:
            moves = built_in_move(feature)
            if moves is None:
                return None
            found.add(moves)
    return frozenset(found)


def built_in_move(feature: str) -> str | None:
    """What moving changes a built-in time-dependent feature (segengine.state.TIME_DEPENDENT)."""
    if feature == "complaints_90d":
        return COMPLAINTS
    if feature.startswith("days_since_") or feature == "customer_age_days":
        return AGE
    if feature in PURCHASE_WINDOW_OF:
        return move(PURCHASE_WINDOW, PURCHASE_WINDOW_OF[feature])
    if feature in BROWSE_WINDOW_OF:
        return move(BROWSE_WINDOW, BROWSE_WINDOW_OF[feature])
    return None


def timed(segments: list[Segment], derived: Mapping[str, Expression], aggregates: Mapping[str, Aggregate]) -> bool:
    """Whether time alone can change the dimension's answer (then timers re-evaluate it)."""
    if any(s.min_dwell_ms or s.exit_grace_ms for s in segments):
        return True
    used, names = segment_reads(segments, derived)
    # Population-relative scores drift as the population changes: timers re-score them too.
    windowed = {n for n, a in aggregates.items() if a.window_ms is not None}
    moving = TIME_DEPENDENT | PREDICTIONS_IN_TIME | windowed  # features time alone changes
    return bool(names & moving) or any(uses_time(e) or population_features(e) for e in used)
