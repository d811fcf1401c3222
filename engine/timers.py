"""Time moves customers: next-check times, computed purely from a customer's state.

After every evaluation the engine computes the earliest future moment at which any
dimension could change with no new event, and keeps it in a sorted set per input
partition (``seg:timers:{p<N>}``), written atomically with the state. A loop in each
worker takes the due customers of the partitions it owns and re-evaluates them with the
same code as events (``cause.kind = timer``), then reschedules them. Cost grows with the
number of due customers, never with the population.

The moments at which something time-dependent changes are known from the state:
  - a purchase leaves a purchase window (7/30/90/365 days after it),
  - an hour of browsing leaves a browse window (24 h, 7 d, 30 d after it),
  - a complaint leaves the 90-day window,
  - a ``days_since_X > C`` (or ``hours_since``) threshold is crossed, at X + C; a
    ``customer_age_days > C`` one (whole UTC days) at the start of a day,
  - a prediction (``p_alive < 0.3``, ``expected_purchases_90d``, ``predicted_clv_365d``)
    crosses a constant: predictions only fall as the customer ages (segengine.clv.features),
    so the first day they are past it is found by bisection on T, the customer's age in
    whole UTC days (they move at midnight), once per lifetime summary (a purchase changes it),
  - a ``min_dwell`` or an ``exit_grace`` ends,
  - a bucket of a declared windowed aggregation leaves its window,
  - another centroid becomes the nearest (``nearest_cluster`` over distances that move with
    time, as ``segengine discover`` writes them): solved for, see segengine.rules.clusters.
Only the kinds the rules read are scheduled (a purchase or browse window no rule reads is
not). A threshold the checker cannot see as "feature compared with a constant" (say
``days_since_last_purchase * 2 > 120``) is caught at the next scheduled moment of what the
dimension reads, or at the customer's next event, instead.

``next_moment`` also says what moves at the moment (a window, an age threshold, a prediction,
a dimension's hold, ...). A timer's decision re-evaluates only the dimensions that read what
moves then (``Dimension.moments``, from segengine.rules.deps.timer_triggers); the others keep
their answer, as they would have: nothing they read moved. On the shipped packs that is about
a sixth of a timer decision's work (the same records, to the byte: tests/unit/test_timer_moments.py).
"""

from __future__ import annotations

import ast
import itertools
import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

from .clv.features import CHANGED_BY_TIME as PREDICTIONS_IN_TIME
from .clv.features import NEEDS_SPEND_MODEL
from .state import (
    ACTIONS,
    BROWSE_WINDOWS_HOURS,
    COMPLAINT_WINDOW_DAYS,
    DAY_MS,
    HOUR_MS,
    PURCHASE_WINDOWS_DAYS,
    CustomerState,
    first_after,
    repeat_value,
)

if TYPE_CHECKING:
    from .aggregates import Aggregate
    from .clv.features import Predictor
    from .rules.clusters import ClusterWatch
    from .rules.expr import Expression
    from .rules.population import Population


class Age(NamedTuple):
    """A feature that grows with time alone: (now - the attribute's time) / unit, with both
    times first floored to whole ``step`` ms (1: the age moves every ms; DAY_MS: it counts
    UTC days, moving at each midnight)."""

    attribute: str  # the state attribute holding the time (epoch ms)
    unit: int  # ms per unit of the feature
    step: int = 1


AGE_FEATURES = {
    "days_since_first_purchase": Age("first_purchase", DAY_MS),
    "days_since_last_purchase": Age("last_purchase", DAY_MS),
    "days_since_last_browse": Age("last_browse", DAY_MS),
    "days_since_first_seen": Age("first_seen", DAY_MS),
    "customer_age_days": Age("first_purchase", DAY_MS, DAY_MS),
}
TS_FEATURES = {
    "first_purchase_ts": "first_purchase",
    "last_purchase_ts": "last_purchase",
    "last_browse_ts": "last_browse",
}
UNIT = {"days_since": DAY_MS, "hours_since": HOUR_MS}
# The built-in windowed features, and the window each counts in (days, hours)
PURCHASE_WINDOW_OF = {f"{k}_{d}d": d for d in PURCHASE_WINDOWS_DAYS for k in ("orders", "spend")}
BROWSE_WINDOW_OF = {f"{a}_{w}": hours for w, hours in BROWSE_WINDOWS_HOURS.items() for a in ACTIONS}
MAX_CROSSING_DAYS = 36_525  # a prediction not past its threshold within a century of the last purchase: never
CROSSINGS_KEPT = 1 << 15  # crossing days kept per rule set: ~240 bytes each, ~8 MB when full


@dataclass(frozen=True, slots=True)
class TimePlan:
    """What in a customer's state can make the rules' answer change with time."""

    purchase_windows: tuple[int, ...] = ()  # the purchase windows the rules read (days)
    browse_windows: tuple[int, ...] = ()  # the browse windows the rules read (hours)
    complaints: bool = False
    thresholds: frozenset[tuple[str, int, int]] = frozenset()  # (state attribute, step ms, offset ms)
    holds: dict[str, tuple[dict[str, int], dict[str, int]]] = field(
        default_factory=dict
    )  # dimension -> (dwell, grace) per segment
    windows: tuple[Aggregate, ...] = ()  # declared windowed aggregations the rules read
    # ages ranked against the population: (the age, feature, n or None for pct_rank)
    ranked_ages: frozenset[tuple[Age, str, int | None]] = frozenset()
    population: Population | None = None
    delays: bool = False  # actions with a delay wait in the state for their time
    # predictions compared with constants: (feature, strict, constant), and their crossing days
    predicted: frozenset[tuple[str, bool, float]] = frozenset()
    crossing: Crossings | None = None
    clusters: tuple[ClusterWatch, ...] = ()  # nearest_cluster calls whose answer time alone moves
    # what moves as each window or hold moves on (``move``), named once: next_moment's every call reads them
    purchase_moves: tuple[tuple[int, str], ...] = field(default=(), init=False, compare=False, repr=False)
    browse_moves: tuple[tuple[int, str], ...] = field(default=(), init=False, compare=False, repr=False)
    window_moves: tuple[tuple[Aggregate, str], ...] = field(default=(), init=False, compare=False, repr=False)
    hold_moves: dict[str, str] = field(default_factory=dict, init=False, compare=False, repr=False)
    browse_moves_set: frozenset[str] = field(default=frozenset(), init=False, compare=False, repr=False)
    purchase_moves_set: frozenset[str] = field(default=frozenset(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "purchase_moves", tuple((d, move(PURCHASE_WINDOW, d)) for d in self.purchase_windows))
        object.__setattr__(self, "browse_moves", tuple((h, move(BROWSE_WINDOW, h)) for h in self.browse_windows))
        object.__setattr__(self, "window_moves", tuple((a, move(AGGREGATE_WINDOW, a.name)) for a in self.windows))
        object.__setattr__(self, "hold_moves", {dimension: move(HOLD, dimension) for dimension in self.holds})
        object.__setattr__(self, "browse_moves_set", frozenset(moves for _, moves in self.browse_moves))
        object.__setattr__(self, "purchase_moves_set", frozenset(moves for _, moves in self.purchase_moves))

    @property
    def empty(self) -> bool:
        return not (
            self.purchase_windows or self.browse_windows or self.complaints or self.thresholds
            or self.holds or self.windows or self.ranked_ages or self.delays or self.predicted or self.clusters
        )  # fmt: skip

    def idle(self, state: CustomerState) -> set[str]:
        """The window moves that cannot come for ``state`` until an event: windows it has nothing in."""
        idle: set[str] = set()
        if not state.purchases:
            idle |= self.purchase_moves_set
        if not state.browse:
            idle |= self.browse_moves_set
        if not state.complaints:
            idle.add(COMPLAINTS)
        for aggregate, moves in self.window_moves:
            if not state.aggs.get(aggregate.key):
                idle.add(moves)
        return idle

    def __or__(self, other: TimePlan) -> TimePlan:
        return TimePlan(
            tuple(sorted({*self.purchase_windows, *other.purchase_windows})),
            tuple(sorted({*self.browse_windows, *other.browse_windows})),
            self.complaints or other.complaints,
            self.thresholds | other.thresholds,
            {**self.holds, **other.holds},
            tuple(dict.fromkeys((*self.windows, *other.windows))),
            self.ranked_ages | other.ranked_ages,
            self.population or other.population,
            self.delays or other.delays,
            self.predicted | other.predicted,
            self.crossing or other.crossing,  # packs of one rule set read one model (segengine.rules.loader)
            (*self.clusters, *other.clusters),
        )


def _age_of(node: ast.AST) -> Age | None:
    """The age ``node`` reads: days_since_X, days_since(X_ts), customer_age_days, ..."""
    if isinstance(node, ast.Name) and node.id in AGE_FEATURES:
        return AGE_FEATURES[node.id]
    if (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in UNIT
        and len(node.args) == 1 and isinstance(node.args[0], ast.Name) and node.args[0].id in TS_FEATURES
    ):  # fmt: skip
        return Age(TS_FEATURES[node.args[0].id], UNIT[node.func.id])
    return None


def constant_of(node: ast.AST) -> float | None:
    """The number a constant node (or a negated one) stands for; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = constant_of(node.operand)
        return None if inner is None else -inner
    return None


_MIRROR = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.Eq, ast.NotEq: ast.NotEq}


def thresholds(expression: Expression) -> set[tuple[str, int, int]]:
    """Every 'age compared with a constant' in the expression, as (attribute, step, the offset
    in ms after the attribute's time, floored to the age's step, at which the comparison
    flips): ``age > C`` and ``age <= C`` flip once the age is past C, ``age >= C`` and
    ``age < C`` when it reaches C, ``==`` and ``!=`` at both; an age in whole steps gets past
    C at the next whole step."""
    found: set[tuple[str, int, int]] = set()
    for node in ast.walk(expression.tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:]):
            for age_node, const_node, kind in ((left, right, type(op)), (right, left, _MIRROR.get(type(op)))):
                age, value = _age_of(age_node), constant_of(const_node)
                if age is None or value is None or kind is None:
                    continue
                at = _whole_ms(value * age.unit)
                if kind in (ast.Gt, ast.LtE, ast.Eq, ast.NotEq):
                    found.add((age.attribute, age.step, _past(at, age.step)))  # just past C
                if kind in (ast.GtE, ast.Lt, ast.Eq, ast.NotEq):
                    found.add((age.attribute, age.step, _reaching(at, age.step)))  # at C
    return found


def _whole_ms(at: float) -> float:
    """``at`` ms as the whole millisecond it stands for where it is one but for float error (a
    constant in days, or a population's value, times the unit: the error grows with the
    size, a few millionths of a ms at 190 days), else as it is."""
    whole = round(at)
    # math.isclose(at, whole, rel_tol=1e-12, abs_tol=1e-6), written out (``at`` is finite: round
    # raises otherwise), where the compiled core would call it through keyword arguments
    return whole if abs(at - whole) <= max(1e-12 * max(abs(at), abs(whole)), 1e-6) else at


def _past(at: float, step: int) -> int:
    """The first whole step (in ms) strictly after ``at`` ms."""
    return (math.floor(at) // step + 1) * step


def _reaching(at: float, step: int) -> int:
    """The first whole step (in ms) at or after ``at`` ms."""
    return -(-math.ceil(at) // step) * step


def predicted_thresholds(expression: Expression) -> set[tuple[str, bool, float]]:
    """Every 'prediction compared with a constant' in the expression, as (feature, strict,
    constant): predictions only fall as the customer ages, so ``f < C`` and ``f >= C`` flip
    when f first drops below C (strict), ``f <= C`` and ``f > C`` when it first reaches C,
    ``==`` and ``!=`` at both."""
    found: set[tuple[str, bool, float]] = set()
    for node in ast.walk(expression.tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:]):
            for feature, const_node, kind in ((left, right, type(op)), (right, left, _MIRROR.get(type(op)))):
                value = constant_of(const_node)
                if not (isinstance(feature, ast.Name) and feature.id in PREDICTIONS_IN_TIME) or value is None:
                    continue
                if kind in (ast.Lt, ast.GtE, ast.Eq, ast.NotEq):
                    found.add((feature.id, True, value))
                if kind in (ast.LtE, ast.Gt, ast.Eq, ast.NotEq):
                    found.add((feature.id, False, value))
    return found


def first_day(test: Callable[[int], bool], start: int, limit: int) -> int | None:
    """The first whole day d in [start, start + limit] with test(d), for a ``test`` that stays
    true once true; None if there is none."""
    return start if test(start) else first_past(test, start, limit)


def first_past(test: Callable[[int], bool], start: int, limit: int) -> int | None:
    """The first t in (start, start + limit] with test(t), given test(start) false and a
    ``test`` that stays true once true; None if there is none. Steps doubling from ``start``,
    then bisection between the last false t and the first true one: O(log(t - start)) tests."""
    low, step = start, 1
    while True:
        high = start + min(step, limit)
        if test(high):
            return first_between(test, low, high)
        if step >= limit:
            return None
        low, step = high, step * 2


def first_between(test: Callable[[int], bool], low: int, high: int) -> int:
    """The first t in (low, high] with test(t), given test(low) false, test(high) true and a
    ``test`` that stays true once true: bisection."""
    while high - low > 1:
        middle = (low + high) // 2
        if test(middle):
            high = middle
        else:
            low = middle
    return high


class Crossings:
    """The crossing day of each (feature, strict, constant) for a lifetime summary (x, t_x,
    m): the first age T >= t_x, in days, at which the prediction is below the constant
    (strict) or at or below it (``day``). It depends on the summary alone, not on the time
    it is asked at, so it is kept (CROSSINGS_KEPT, the oldest half dropped past it) for
    every later decision of the customer, and of customers with the same summary, until a
    purchase changes it. Given the age of a moment ``next_moment`` already has (``by``), it
    asks first whether it has come by then (``past``: one prediction) and works it out (some
    30) only when it has."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.kept: dict[tuple[str, bool, float, int, int, float | None], int | None] = {}

    def past(self, feature: str, strict: bool, constant: float, x: int, t_x: int, m: float | None, T: int) -> bool:
        """Whether the prediction at age T (days) is past the constant."""
        value = self.predictor.at(feature, (x, t_x, T, m))
        return value is not None and (value < constant if strict else value <= constant)

    def day(
        self, feature: str, strict: bool, constant: float, x: int, t_x: int, m: float | None, by: int | None = None
    ) -> int | None:
        """The crossing day; None: not within MAX_CROSSING_DAYS of t_x (never), or, given an
        age ``by`` (days) and not worked out yet, not come by then (one prediction tells; the
        day is left to be worked out when it may come first)."""
        key = (feature, strict, constant, x, t_x, m)
        kept = self.kept
        found = kept.get(key, -1)  # -1: not worked out (a day is never negative)
        if found != -1:
            return found
        if by is not None and (by < t_x or not self.past(feature, strict, constant, x, t_x, m, by)):
            return None
        found = first_day(lambda T: self.past(feature, strict, constant, x, t_x, m, T), t_x, MAX_CROSSING_DAYS)
        if len(kept) >= CROSSINGS_KEPT:
            for old in list(itertools.islice(kept, CROSSINGS_KEPT // 2)):
                del kept[old]
        kept[key] = found
        return found


def ranked_ages(expression: Expression) -> set[tuple[Age, str, int | None]]:
    """Every ``quantile_score(age, n)`` / ``pct_rank(age)``: an age's score moves as the age
    passes the population's values, with no event."""
    found: set[tuple[Age, str, int | None]] = set()
    for node in ast.walk(expression.tree):
        if (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("quantile_score", "pct_rank")
            and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in AGE_FEATURES
        ):  # fmt: skip
            n = (
                node.args[1].value
                if node.func.id == "quantile_score" and isinstance(node.args[1], ast.Constant)
                else None
            )
            found.add((AGE_FEATURES[node.args[0].id], node.args[0].id, n))  # type: ignore[arg-type]
    return found


def plan_for(
    expressions: list[Expression], reads: set[str], holds: dict[str, tuple[dict[str, int], dict[str, int]]],
    aggregates: list[Aggregate] | None = None, population: Population | None = None, delays: bool = False,
    predictor: Predictor | None = None, clusters: tuple[ClusterWatch, ...] = (),
) -> TimePlan:  # fmt: skip
    found: set[tuple[str, int, int]] = set()
    ranked: set[tuple[Age, str, int | None]] = set()
    predicted: set[tuple[str, bool, float]] = set()
    for expression in expressions:
        found |= thresholds(expression)
        ranked |= ranked_ages(expression)
        predicted |= predicted_thresholds(expression)
    if predictor is None:
        predicted = set()  # no model: the rules cannot read predictions (segengine.rules.models)
    return TimePlan(
        purchase_windows=tuple(sorted({PURCHASE_WINDOW_OF[f] for f in reads if f in PURCHASE_WINDOW_OF})),
        browse_windows=tuple(sorted({BROWSE_WINDOW_OF[f] for f in reads if f in BROWSE_WINDOW_OF})),
        complaints="complaints_90d" in reads,
        thresholds=frozenset(found),
        holds={d: h for d, h in holds.items() if h[0] or h[1]},
        windows=tuple(a for a in aggregates or () if a.window_ms is not None),
        ranked_ages=frozenset(ranked),
        population=population if ranked else None,
        delays=delays,
        predicted=frozenset(predicted),
        crossing=Crossings(predictor) if predicted and predictor is not None else None,
        clusters=clusters,
    )


def next_check(plan: TimePlan, state: CustomerState, now: int) -> int | None:
    """The earliest moment after ``now`` at which time alone may change a segment; None if never."""
    return next_moment(plan, state, now)[0]


# What moves at a moment (``next_moment``), as the timer triggers of the dimensions that read
# it name it (segengine.rules.deps.timer_triggers): a dimension none of whose triggers moves
# at a moment keeps its answer there, and is not decided again.
AGE = "age"  # a threshold on an age (days_since_*, customer_age_days, days_since()), a cluster watch
PREDICTED_MOVE = "predicted"  # a prediction's threshold, or the day predictions start
RANKED = "ranked"  # an age's score against the population
COMPLAINTS = "complaints"  # a complaint leaves complaints_90d
DELAY = "delay"  # a delayed action's time (no dimension reads it: the actions are always looked at)


# What else moves: a window's oldest entry leaving it, or a dimension's hold ending, named
# ``<kind>:<which>`` by ``move`` (the window's days or hours, the aggregate's or the
# dimension's name).
PURCHASE_WINDOW = "purchase"
BROWSE_WINDOW = "browse"
AGGREGATE_WINDOW = "aggregate"
HOLD = "hold"


@cache  # made once per pair: next_moment asks for them on every call
def move(kind: str, which: int | str) -> str:
    return f"{kind}:{which}"


Moment = tuple[int | None, frozenset[str]]  # next_moment's answer: when, and what moves then


NOTHING_QUIET: frozenset[str] = frozenset()


def next_moment(plan: TimePlan, state: CustomerState, now: int, quiet: frozenset[str] = NOTHING_QUIET) -> Moment:
    """The earliest moment after ``now`` at which time alone may change a segment (None if
    never), and what moves then (the triggers above). ``quiet``: windows whose moves cannot
    change any answer until the state changes (segengine.evaluate.quiet_moves), left out."""
    best: int | None = None
    moving: list[str] = []

    # Purchases and complaints are sorted by time and browse buckets are few: per window, the
    # next one to leave it is found by bisection (no scan of the customer's history).
    if plan.purchase_windows and state.purchases:
        purchases = state.purchases
        for days, moves in plan.purchase_moves:  # a window no rule reads changes nothing when it moves
            if quiet and moves in quiet:
                continue
            i = first_after(purchases, now - days * DAY_MS)
            if i < len(purchases):
                best = _consider(best, moving, now, int(purchases[i][0]) + days * DAY_MS, moves)
    if plan.browse_windows and state.browse and not (quiet and plan.browse_moves_set <= quiet):
        buckets = sorted(map(int, state.browse))
        for hours, moves in plan.browse_moves:
            if quiet and moves in quiet:
                continue
            i = bisect_right(buckets, (now - hours * HOUR_MS) // HOUR_MS)
            if i < len(buckets):
                best = _consider(best, moving, now, (buckets[i] + hours) * HOUR_MS, moves)
    if plan.complaints and state.complaints and not (quiet and COMPLAINTS in quiet):
        i = bisect_right(state.complaints, now - COMPLAINT_WINDOW_DAYS * DAY_MS)
        if i < len(state.complaints):
            best = _consider(best, moving, now, state.complaints[i] + COMPLAINT_WINDOW_DAYS * DAY_MS, COMPLAINTS)
    if plan.delays:
        for entry in state.delayed:
            best = _consider(best, moving, now, entry["due"], DELAY)
    for aggregate, moves in plan.window_moves:
        if quiet and moves in quiet:
            continue
        expiry = aggregate.next_expiry(state, now)
        if expiry is not None:
            best = _consider(best, moving, now, expiry, moves)
    if plan.population is not None:
        for age, feature, n in plan.ranked_ages:
            ts = getattr(state, age.attribute)
            changes = plan.population.rank_changes(feature, n)
            if ts is not None and changes is not None:
                base = ts - ts % age.step
                change = next_change(changes, (now - base) // age.step * age.step / age.unit)
                if change is not None:
                    reached, only_past = change
                    at = _whole_ms(reached * age.unit)  # ms after the base
                    best = _consider(
                        best,
                        moving,
                        now,
                        max(base + (_past if only_past else _reaching)(at, age.step), now + 1),
                        RANKED,
                    )
    for attribute, step, offset in plan.thresholds:
        ts = getattr(state, attribute)
        if ts is not None:
            best = _consider(best, moving, now, ts - ts % step + offset, AGE)
    if plan.crossing is not None and state.first_purchase is not None and state.last_purchase is not None:
        day = state.first_purchase // DAY_MS  # predictions count whole days from the first purchase day
        t_x, today = state.last_purchase // DAY_MS - day, now // DAY_MS - day
        if today < t_x:
            best = _consider(
                best, moving, now, (day + t_x) * DAY_MS, PREDICTED_MOVE
            )  # decided before the last purchase day: null until then
        else:
            x, m = state.repeat_days, repeat_value(state)
            for feature, strict, constant in plan.predicted:
                spend = m if feature in NEEDS_SPEND_MODEL else None
                by = None if best is None else best // DAY_MS - day  # a crossing after that age comes later
                crossed = plan.crossing.day(feature, strict, constant, x, t_x, spend, by)
                if crossed is not None and crossed > today:
                    best = _consider(best, moving, now, (day + crossed) * DAY_MS, PREDICTED_MOVE)
    for dimension, (dwell, grace) in plan.holds.items():
        segment = state.members.get(dimension)
        if segment is None:
            continue
        if segment in dwell and dimension in state.member_since:
            best = _consider(
                best, moving, now, state.member_since[dimension] + dwell[segment], plan.hold_moves[dimension]
            )
        if segment in grace and dimension in state.grace_since:
            best = _consider(
                best, moving, now, state.grace_since[dimension] + grace[segment], plan.hold_moves[dimension]
            )
    for watch in plan.clusters:  # last: its exact check is skipped when another moment comes first
        changed = watch.next_change(state, now, best)
        if changed is not None:
            best = _consider(best, moving, now, changed, AGE)
    return best, frozenset(moving)


def _consider(best: int | None, moving: list[str], now: int, t: int, what: str) -> int | None:
    """``next_moment``'s earliest moment after ``now`` so far, with ``t`` (when ``what`` moves) taken in."""
    if t > now:
        if best is None or t < best:
            moving.clear()
            moving.append(what)
            return t
        if t == best:
            moving.append(what)
    return best


def next_rank_change(sample: list[float], value: float, n: int | None) -> tuple[float, bool] | None:
    """When ``value``, growing, next changes its score against the population ``sample``:
    (the population value, whether the change comes only once the value is past it rather
    than equal to it: ties count half). ``n`` None is ``pct_rank``, else
    ``quantile_score(n)``; scores only grow with the value. None: never again."""
    return next_change(rank_changes(sample, n), value)


def next_change(changes: RankChanges, value: float) -> tuple[float, bool] | None:
    """``next_rank_change`` from the sample's change points (``rank_changes``, which a
    ``Population`` keeps per sample): one bisection."""
    keys, points = changes
    i = bisect_right(keys, (value, 0))  # past the value, or on it with the change just past it to come
    return points[i] if i < len(points) else None


# (value, 0 | 1) in order, and (value, only once past it) for each: see rank_changes
RankChanges = tuple[list[tuple[float, int]], list[tuple[float, bool]]]


def rank_changes(sample: list[float], n: int | None) -> RankChanges:
    """Every point at which a growing value's score against ``sample`` changes, in order:
    (value, 0) and (value, False) where it changes on reaching the value, (value, 1) and
    (value, True) where it changes once past it."""
    size = len(sample)

    def score(rank: float) -> float:
        return rank if n is None else min(n, 1 + int(rank * n))

    keys: list[tuple[float, int]] = []
    points: list[tuple[float, bool]] = []
    i = 0
    while i < size:
        value = sample[i]
        j = bisect_right(sample, value, i)  # sample[i:j]: the ties of ``value``
        before, at, past = score(i / size), score((i + (j - i) / 2) / size), score(j / size)
        if at != before:
            keys.append((value, 0))
            points.append((value, False))
        if past != at:
            keys.append((value, 1))
            points.append((value, True))
        i = j
    return keys, points
