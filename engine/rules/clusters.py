"""When time alone changes a ``nearest_cluster``: the moment a customer's nearest centroid
changes with no event, computed, not polled (segengine.timers asks it after every decision).

Between two moments something steps (a window entry leaving its window, a UTC midnight),
each time-moving feature is linear in time: ``days_since_*``, ``days_since(ts)``,
``hours_since(ts)`` and ``now()`` grow with every millisecond, ``customer_age_days`` by one
at each midnight; windowed features only step, at expiries the timers already schedule.
A squared distance to a centroid (``(z - c) * (z - c) + ...`` with ``z = (f - mean) /
scale``, as ``segengine discover`` writes it) is quadratic in those features, and the
quadratic terms are the same for every centroid, so the difference of two distances is
linear: ``d_j(t) - d_c(t) = A + B * ms + C * midnights`` after the decision. A is read from
the distances at the decision (as the engine computed them); B and C are constants of the
rules, found once when they are compiled by expanding each distance into a polynomial over
the moving features. Then the first moment another cluster j beats the current one c (j <
c: d_j <= d_c, j > c: d_j < d_c; the first index wins a tie, as ``nearest_cluster``) is
solved for, and the earliest over j is checked against the engine's own arithmetic at that
millisecond and the one before (and moved to where the engine's answer really changes, when
rounding puts it a few milliseconds off): the check is at the first millisecond at which
the customer's nearest cluster, as the engine computes it, is another one.

A ``nearest_cluster`` whose distances are not of that form (a moving feature inside
``round()``, ``min()``, a comparison, or divided by something unknown when compiled; a
prediction; distances whose difference is not linear in time) gets no timer of its own:
it is re-decided at the customer's next event or other check, as before.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..clv.features import CHANGED_BY_TIME as PREDICTIONS_IN_TIME
from ..state import DAY_MS, HOUR_MS, CustomerState, Derived, Features
from ..timers import first_between, first_past
from .expr import Expression, compile_value

HORIZON_MS = 36_525 * DAY_MS  # a crossing more than a century away: none
CONTINUOUS = {  # features that grow by 1 every ``unit`` ms
    "days_since_first_purchase": DAY_MS,
    "days_since_last_purchase": DAY_MS,
    "days_since_last_browse": DAY_MS,
    "days_since_first_seen": DAY_MS,
}
MIDNIGHTS = "customer_age_days"  # grows by 1 at each UTC midnight
UNITS = {"days_since": DAY_MS, "hours_since": HOUR_MS}
Monomial = tuple[str, ...]  # sorted variable names; () the constant term


class Unsupported(Exception):
    """The expression is not a polynomial of degree <= 2 in the moving features, with
    coefficients known when the rules are compiled."""


@dataclass(slots=True)
class Form:
    """A value as a polynomial over the moving features (each a variable), plus ``opaque``:
    a part constant between steps but unknown when the rules are compiled."""

    poly: dict[Monomial, float]
    opaque: bool = False

    @property
    def moving(self) -> bool:
        return any(m for m, c in self.poly.items() if c)


def _add(a: Form, b: Form, sign: float) -> Form:
    poly = dict(a.poly)
    for m, c in b.poly.items():
        poly[m] = poly.get(m, 0.0) + sign * c
    return Form(poly, a.opaque or b.opaque)


def _mul(a: Form, b: Form) -> Form:
    if (a.opaque and b.moving) or (b.opaque and a.moving):
        raise Unsupported("a moving feature times a value unknown when compiled")
    poly: dict[Monomial, float] = {}
    for ma, ca in a.poly.items():
        for mb, cb in b.poly.items():
            m = tuple(sorted(ma + mb))
            if len(m) > 2:
                raise Unsupported("degree above 2")
            poly[m] = poly.get(m, 0.0) + ca * cb
    return Form(poly, a.opaque or b.opaque)


class _Expander:
    """Rule expressions -> Forms; ``variables``: each moving variable -> its unit in ms (0:
    the variable counts midnights)."""

    def __init__(self, derived: Mapping[str, Expression]) -> None:
        self.derived = derived
        self.variables: dict[str, int] = {}
        self.done: dict[str, Form] = {}

    def name(self, name: str) -> Form:
        if name in self.derived:
            if name not in self.done:
                self.done[name] = self(self.derived[name].tree)
            return self.done[name]
        if name in CONTINUOUS or name == MIDNIGHTS:
            self.variables[name] = CONTINUOUS.get(name, 0)
            return Form({(name,): 1.0})
        if name in PREDICTIONS_IN_TIME:
            raise Unsupported(f"{name} moves with time, not linearly")
        if name == "current":
            raise Unsupported("a distance reads the current segment")
        return Form({}, True)  # constant between steps (a windowed feature steps at a scheduled expiry)

    def __call__(self, node: ast.AST) -> Form:
        match node:
            case ast.Constant(value=value) if isinstance(value, int | float) and not isinstance(value, bool):
                return Form({(): float(value)})
            case ast.Name(id=name):
                return self.name(name)
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                inner = self(operand)
                return Form({m: -c for m, c in inner.poly.items()}, inner.opaque)
            case ast.BinOp(op=ast.Add() | ast.Sub() as op, left=left, right=right):
                return _add(self(left), self(right), 1.0 if isinstance(op, ast.Add) else -1.0)
            case ast.BinOp(op=ast.Mult(), left=left, right=right):
                return _mul(self(left), self(right))
            case ast.BinOp(op=ast.Div(), left=left, right=right):
                top, bottom = self(left), self(right)
                if not top.moving:
                    return Form({}, True)
                divisor = bottom.poly.get((), 0.0)
                if bottom.opaque or bottom.moving or divisor == 0:
                    raise Unsupported("a moving feature divided by something not a known constant")
                return Form({m: c / divisor for m, c in top.poly.items()})
            case ast.Call(func=ast.Name(id=fname), args=args) if fname in UNITS and len(args) == 1:
                if self(args[0]).moving:
                    raise Unsupported(f"{fname}() of a moving value")
                variable = f"{fname}({ast.unparse(args[0])})"
                self.variables[variable] = UNITS[fname]
                return Form({(variable,): 1.0})
            case ast.Call(func=ast.Name(id="now"), args=[]):
                self.variables["now()"] = 1
                return Form({("now()",): 1.0})
        children = [self(c) for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)]
        if any(c.moving for c in children):
            raise Unsupported(f"a moving feature inside {type(node).__name__}")
        return Form({}, True)


@dataclass(frozen=True, slots=True)
class Pair:
    """Another cluster ``j``, against the current one: d_j - d_c = A + slope * ms + step * midnights."""

    j: int
    slope: float
    step: float
    strict: bool  # j after c: it must be strictly nearer to win


@dataclass(frozen=True, slots=True, eq=False)
class ClusterWatch:
    """One ``nearest_cluster(...)`` call whose distances move with time alone."""

    source: str
    distances: tuple[Callable[[Any, Any, Any], Any], ...] = field(repr=False)  # compiled, as the engine has them
    pairs: tuple[tuple[Pair, ...], ...] = field(repr=False)  # per current cluster c, the others
    table: Derived = field(repr=False)  # the rules' features, to read the distances at any time

    def nearest(self, state: CustomerState, t: int) -> tuple[int | None, list[Any]]:
        """The nearest cluster at ``t`` as the engine computes it (None: a null distance), and the distances."""
        features = Features(state, t, self.table)
        values = [d(features, None, t) for d in self.distances]
        if any(v is None or not isinstance(v, int | float) or v != v for v in values):  # null or NaN
            return None, values
        return min(range(len(values)), key=values.__getitem__), values

    def next_change(self, state: CustomerState, now: int, before: int | None = None) -> int | None:
        """The first millisecond after ``now`` at which the nearest cluster differs from the
        one at ``now``, if that is before ``before`` (else some moment not before it, or None)."""
        c, values = self.nearest(state, now)
        if c is None:
            return None  # null stays null until an event: time alone does not fill a feature
        limit = now + HORIZON_MS
        best: tuple[int, int, int] | None = None  # (first ms, piece start, piece end)
        for pair in self.pairs[c]:
            found = _first_crossing(float(values[pair.j] - values[c]), pair, now, limit)
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        if best is None:
            return None
        at, low, high = best
        if before is not None and at >= before:
            return at  # another check comes first: it will look again
        return self._exact(state, c, at, low, min(high, limit))

    def _exact(self, state: CustomerState, c: int, at: int, low: int, high: int) -> int | None:
        """The first ms in [low, high] at which the engine's nearest cluster is not c, searched
        from ``at`` (the solved moment: rounding may put it a few ms off) by doubling steps,
        then bisection. Within one piece each distance difference is linear in time, so once
        another cluster is nearer it stays so until the piece ends."""

        def moved(t: int) -> bool:
            return self.nearest(state, t)[0] != c

        at = min(max(at, low), high)
        if not moved(at):
            found = first_past(moved, at, high - at)
            return high + 1 if found is None else found  # none within the piece: look again at its end
        inside, step = at, 1  # moved at ``inside``; find one back that has not
        while True:
            probe = max(low, inside - step)
            if probe == inside:
                return inside
            if not moved(probe):
                return first_between(moved, probe, inside)
            inside, step = probe, step * 2


def _first_crossing(a: float, pair: Pair, now: int, limit: int) -> tuple[int, int, int] | None:
    """The first ms t in (now, limit] at which a + slope * (t - now) + step * k(t) is <= 0 (<
    0 when strict), k(t) the midnights passed since now; with the piece (between two
    midnights) it is in, as (t, piece start, piece end). None: not by ``limit``."""
    b, step, strict = pair.slope, pair.step, pair.strict

    def crossed(value: float) -> bool:
        return value < 0 if strict else value <= 0

    def within(piece_start: int, piece_end: int, base: float) -> int | None:
        """The first t in the piece with base + b * (t - now) crossed."""
        if piece_start > piece_end:
            return None
        if crossed(base + b * (piece_start - now)):
            return piece_start
        if b >= 0 or not crossed(base + b * (piece_end - now)):
            return None
        root = -base / b  # ms after now where the line is 0
        t = now + (math.floor(root) + 1 if strict else math.ceil(root))
        return min(max(t, piece_start), piece_end)

    if step == 0:  # no midnight in it: one line
        t = within(now + 1, limit, a)
        return None if t is None else (t, now + 1, limit)
    day = now // DAY_MS
    first_end = (day + 1) * DAY_MS - 1
    t = within(now + 1, first_end, a)
    if t is not None:
        return t, now + 1, first_end
    # Piece m >= 1 spans [(day + m) * DAY_MS, (day + m + 1) * DAY_MS - 1]; its lowest value is
    # at its start (b >= 0) or its end (b < 0), and that lowest value is linear in m.
    edge = (day * DAY_MS - now) + (DAY_MS - 1 if b < 0 else 0)
    lowest0 = a + b * edge  # the lowest value of piece m is lowest0 + m * per_day
    per_day = b * DAY_MS + step
    if per_day >= 0 or lowest0 / -per_day > HORIZON_MS // DAY_MS + 2:
        return None
    m = max(1, math.ceil(lowest0 / -per_day))
    while m > 1 and crossed(lowest0 + (m - 1) * per_day):  # rounding: the first piece whose lowest crosses
        m -= 1
    while not crossed(lowest0 + m * per_day):
        m += 1
    start, end = (day + m) * DAY_MS, (day + m + 1) * DAY_MS - 1
    if start > limit:
        return None
    t = within(start, end, a + step * m)
    return None if t is None else (t, start, end)


def _nearest_calls(expressions: Iterable[Expression]) -> list[ast.Call]:
    """Every distinct ``nearest_cluster(...)`` call in these expressions."""
    calls: dict[str, ast.Call] = {}
    for expression in expressions:
        for node in ast.walk(expression.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "nearest_cluster":
                calls.setdefault(ast.dump(node), node)
    return list(calls.values())


def watches(
    expressions: Iterable[Expression],
    derived: Mapping[str, Expression],
    compiled: Mapping[str, Callable[..., Any]],
    population: Any = None,
) -> tuple[ClusterWatch, ...]:
    """A watch for each ``nearest_cluster`` in ``expressions`` (the dimensions' conditions and
    the derived features they read) whose distances move with time and differ linearly;
    ``compiled``: the rules' derived features (and aggregations) as the engine computes them."""
    found: list[ClusterWatch] = []
    table: Derived | None = None
    for call in _nearest_calls(expressions):
        expand = _Expander(derived)
        try:
            forms = [expand(arg) for arg in call.args]
        except Unsupported:
            continue
        if not any(f.moving for f in forms):
            continue  # constant between steps the timers already schedule
        pairs = _pairs(forms, expand.variables)
        if pairs is None:
            continue
        if table is None:
            table = Derived(compiled)
        distances = tuple(
            compile_value(
                Expression(ast.unparse(arg), frozenset(n.id for n in ast.walk(arg) if isinstance(n, ast.Name)), arg),
                population=population,
            )
            for arg in call.args
        )
        found.append(ClusterWatch(ast.unparse(call), distances, pairs, table))
    return tuple(found)


def _pairs(forms: list[Form], variables: Mapping[str, int]) -> tuple[tuple[Pair, ...], ...] | None:
    """For each current cluster c, every other j with the coefficients of d_j - d_c; None when
    a difference is not linear in the moving features."""
    out: list[tuple[Pair, ...]] = []
    for c, current in enumerate(forms):
        pairs: list[Pair] = []
        for j, other in enumerate(forms):
            if j == c:
                continue
            difference = _add(other, current, -1.0).poly
            slope = step = 0.0
            for monomial, coefficient in difference.items():
                if not monomial or coefficient == 0:
                    continue
                if len(monomial) > 1:
                    return None  # quadratic terms that do not cancel
                unit = variables[monomial[0]]
                if unit:
                    slope += coefficient / unit
                else:
                    step += coefficient
            pairs.append(Pair(j, slope, step, strict=j > c))
        out.append(tuple(pairs))
    return tuple(out)
