"""Which moments can move a customer, given the segment that holds: what the timers may skip.

Windowed counts only fall as time passes: with no new event, a purchase, a browse bucket, a
complaint or a bucket of a declared aggregation leaves its window and nothing enters it. So
a condition that reads them in one direction only (``add_to_cart_24h >= 2``,
``categories_browsed_30d >= 4``, ``orders_365d > 0``) can only become false with time
alone, and once false it stays false until the customer's next event. A customer in
``intent: cold`` (every segment's condition false) cannot become ``hot`` or ``warm`` as
browse buckets leave the 24-hour and 7-day windows: those moments, hourly for a browsing
customer, need no timer. ``Dimension.sensitive`` says, for each segment that can hold (and
the default), the moves at which the answer may change while it holds (the segments before
it may start to hold, or it may stop); ``segengine.evaluate.quiet_moves`` reads it after
each decision and ``segengine.timers.next_moment`` leaves the other moves out.

Only dimensions whose answer moves with time through these windows alone are worked out
(their features then change only at the moments of their own window): a dimension that also
reads an age, a prediction, a population rank or the decision's time (``days_since()``)
may change between moments, and keeps every moment (``sensitive`` None).

Directions are bit sets: RISE (a value may grow; a condition may go from false to true),
FALL (it may shrink; go from true to false), both (EITHER) or neither (STILL). Each operator
of the rule language is monotone in each operand, or is taken as EITHER: ``+``, ``min``,
``max``, ``coalesce``, ``round``, ``and``, ``or``, ordering comparisons and a product or a
quotient with a constant pass directions on (flipped by ``-``, ``not`` and a negative
constant); ``==``, ``in``, ``abs``, ``%`` and a product of two moving values may do anything.
Whether a value is null does not change with time here: windowed counts are never null.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping

from ..aggregates import Aggregate
from ..clv.features import CHANGED_BY_TIME as PREDICTIONS_IN_TIME
from ..state import TIME_DEPENDENT
from ..timers import AGE, AGGREGATE_WINDOW, HOLD, constant_of, move
from .deps import built_in_move, segment_reads
from .expr import CONSTANTS, Expression, population_features, uses_time
from .functions import POPULATION_FUNCTIONS, TIME_FUNCTIONS
from .ruleset import CURRENT, Segment

STILL, RISE, FALL = 0, 1, 2
EITHER = RISE | FALL
FALLING_OPS = frozenset({"count", "distinct"})  # windowed aggregations that only fall as buckets leave
MONOTONE_CALLS = frozenset({"coalesce", "min", "max", "round"})  # non-decreasing in each argument


def flip(direction: int) -> int:
    return (direction & RISE) << 1 | (direction & FALL) >> 1


def window_move(feature: str, aggregates: Mapping[str, Aggregate]) -> tuple[str, int] | None:
    """The move at which ``feature`` changes with time alone, and how, if it changes only
    then (a windowed count or sum, or aggregation); None for any other feature."""
    if feature in aggregates:
        aggregate = aggregates[feature]
        if aggregate.window_ms is None:
            return None
        return move(AGGREGATE_WINDOW, feature), FALL if aggregate.op in FALLING_OPS else EITHER
    moves = built_in_move(feature)  # orders and spend (amounts are never negative), browse counts, complaints
    return None if moves is None or moves == AGE else (moves, FALL)


class Motion:
    """How each value of a rule set may move at one move ``kind`` (everything else still)."""

    def __init__(self, kind: str, derived: Mapping[str, Expression], aggregates: Mapping[str, Aggregate]) -> None:
        self.kind = kind
        self.derived = derived
        self.aggregates = aggregates
        self._features: dict[str, int] = {}

    def feature(self, name: str) -> int:
        found = self._features.get(name)
        if found is None:
            self._features[name] = EITHER  # a cycle (refused when compiled) reads as anything
            if name in self.derived:
                found = self.value(self.derived[name].tree)
            else:
                moves = window_move(name, self.aggregates)
                found = moves[1] if moves is not None and moves[0] == self.kind else STILL
            self._features[name] = found
        return found

    def truth(self, node: ast.expr) -> int:
        """How the truth of ``node`` as a condition may move."""
        direction = self.value(node)
        boolean = isinstance(node, ast.Compare | ast.BoolOp) or (
            isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
        )
        return direction if boolean or not direction else EITHER

    def value(self, node: ast.expr) -> int:  # one case per node kind of the rule language
        match node:
            case ast.Constant():
                return STILL
            case ast.Name(id=name):
                return STILL if name in CONSTANTS or name == CURRENT else self.feature(name)
            case ast.BoolOp(values=values):
                return _joined(self.truth(v) for v in values)
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return flip(self.truth(operand))
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return flip(self.value(operand))
            case ast.BinOp(op=ast.Add(), left=left, right=right):
                return self.value(left) | self.value(right)
            case ast.BinOp(op=ast.Sub(), left=left, right=right):
                return self.value(left) | flip(self.value(right))
            case ast.BinOp(op=ast.Mult(), left=left, right=right):
                return self._scaled(left, right) if constant_of(right) is not None else self._scaled(right, left)
            case ast.BinOp(op=ast.Div(), left=left, right=right):
                return self._scaled(left, right)
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                found = STILL
                for test, right in zip(ops, comparators):
                    apart = self.value(left) | flip(self.value(right))  # how left - right may move
                    if isinstance(test, ast.Gt | ast.GtE):
                        found |= apart
                    elif isinstance(test, ast.Lt | ast.LtE):
                        found |= flip(apart)
                    elif apart:  # ==, !=, in, not in: either way
                        found = EITHER
                    left = right
                return found
            case ast.Call(func=ast.Name(id=fname), args=args) if fname in MONOTONE_CALLS:
                return self.value(args[0]) if fname == "round" and _still(self, args[1:]) else _monotone(self, args)
            case ast.Call(func=ast.Name(id=fname)) if fname in TIME_FUNCTIONS or fname in POPULATION_FUNCTIONS:
                return EITHER  # not reached for a dimension worked out (see ``sensitive``)
            case ast.Call(args=args):
                return STILL if _still(self, args) else EITHER
        return EITHER

    def _scaled(self, value: ast.expr, by: ast.expr) -> int:
        """``value`` times (or divided by) ``by``."""
        factor = constant_of(by)
        if factor is None:
            return STILL if not (self.value(value) | self.value(by)) else EITHER
        return self.value(value) if factor > 0 else flip(self.value(value)) if factor < 0 else STILL


def _joined(directions: Iterable[int]) -> int:
    found = STILL
    for d in directions:
        found |= d
    return found


def _monotone(motion: Motion, args: list[ast.expr]) -> int:
    return _joined(motion.value(a) for a in args)


def _still(motion: Motion, args: list[ast.expr]) -> bool:
    return not any(motion.value(a) for a in args)


def windowed_only(
    segments: list[Segment], derived: Mapping[str, Expression], aggregates: Mapping[str, Aggregate]
) -> bool:
    """Whether time alone moves what the segments read only through windows (``window_move``):
    no age, prediction, population rank or decision time, directly or through derived features."""
    used, names = segment_reads(segments, derived)
    if any(uses_time(e) or population_features(e) for e in used):
        return False
    timed = {n for n in names if n in TIME_DEPENDENT or n in PREDICTIONS_IN_TIME or n in aggregates}
    return all(
        window_move(n, aggregates) is not None or (n in aggregates and aggregates[n].window_ms is None) for n in timed
    )


def sensitive(
    name: str,
    segments: list[Segment],
    moments: frozenset[str] | None,
    derived: Mapping[str, Expression],
    aggregates: Mapping[str, Aggregate],
) -> tuple[frozenset[str], ...] | None:
    """For each segment (by index) and then the default: the moves among ``moments`` at which
    the answer may change while that one holds (the customer in it, as the segment that
    holds first, or in the default with no segment holding). Segments before the one that
    holds are tried by their ``enter`` condition and are false: a move that can make one
    true may change the answer; so may a move that can make the holding one's ``stay``
    false. A dimension's hold (``min_dwell``, ``exit_grace``) always may. None: the
    dimension reads something that moves with time but not at its window's moments
    (see ``windowed_only``), or has no moments."""
    if not moments or not windowed_only(segments, derived, aggregates):
        return None
    hold = move(HOLD, name)
    kinds = sorted(moments - {hold})
    motions = [Motion(kind, derived, aggregates) for kind in kinds]
    held = {hold} & moments

    def moving(node: ast.expr, bit: int) -> set[str]:
        return {kind for kind, motion in zip(kinds, motions) if motion.truth(node) & bit}

    out: list[frozenset[str]] = []
    rising: set[str] = set()  # the moves that may make a segment before this one hold
    for segment in segments:
        out.append(frozenset(rising | moving(segment.stay.tree, FALL) | held))
        rising |= moving(segment.enter.tree, RISE)
    out.append(frozenset(rising | held))  # the default: no segment holds
    return tuple(out)
