"""What rule conditions can call, and the null-safe operators their compiled code uses.

Every function and operator here takes null (``None``) in its stride: ordering
comparisons with null are false, arithmetic with null (or a division by zero) is null,
``coalesce``/``min``/``max`` skip nulls. ``segengine.rules.expr`` checks calls against these
tables and binds ``HELPERS`` into the code it generates.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any


def _null_safe(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return None if any(a is None for a in args) else fn(*args)

    return call


def _coalesce(*args: Any) -> Any:
    return next((a for a in args if a is not None), None)


def _nullable_min(*args: Any) -> Any:
    values = [a for a in args if a is not None]
    return min(values) if values else None


def _nullable_max(*args: Any) -> Any:
    values = [a for a in args if a is not None]
    return max(values) if values else None


def _nearest_cluster(*distances: Any) -> int | None:
    """The 0-based position of the smallest distance, the first on a tie (as k-means'
    ``predict`` picks); null when any is null: a customer missing a feature is in no cluster."""
    if any(d is None for d in distances):
        return None
    return min(range(len(distances)), key=distances.__getitem__)


FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    # name: (function, min args, max args)
    "coalesce": (_coalesce, 1, 16),
    "min": (_nullable_min, 1, 16),
    "max": (_nullable_max, 1, 16),
    "abs": (_null_safe(abs), 1, 1),
    "round": (_null_safe(round), 1, 2),
    # nearest_cluster(distance_0, distance_1, ...): the cluster a customer is nearest to
    # (the packs `segengine discover` writes: segengine.discover)
    "nearest_cluster": (_nearest_cluster, 2, 16),
}

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
TIME_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    # name: (function of (now, *args), min args, max args); timestamps are epoch ms
    "days_since": (lambda now, ts: None if ts is None or now is None else (now - ts) / DAY_MS, 1, 1),
    "hours_since": (lambda now, ts: None if ts is None or now is None else (now - ts) / HOUR_MS, 1, 1),
    "now": (lambda now: now, 0, 0),
}
# Population-relative functions take a bare feature name (and n): see segengine.rules.population.
POPULATION_FUNCTIONS = {"quantile_score": 2, "pct_rank": 1}

# The operators of a condition, by syntax node type.
COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}


def _ordering(fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return False
        try:
            return bool(fn(a, b))
        except TypeError:
            return False

    return compare


def _equality(fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        try:
            return bool(fn(a, b))
        except TypeError:
            return False

    return compare


def _arith(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        try:
            return fn(a, b)
        except (ZeroDivisionError, TypeError):
            return None

    return apply


# What the generated code calls, by the names segengine.rules.expr gives them.
HELPERS: dict[str, Any] = {
    **{
        f"_cmp_{op.__name__}": (_equality if op in (ast.Eq, ast.NotEq) else _ordering)(fn) for op, fn in COMPARE.items()
    },
    **{f"_op_{op.__name__}": _arith(fn) for op, fn in ARITH.items()},
    "_neg": lambda a: None if a is None else -a,
    "_in": lambda a, k: a is not None and a in k,
    "_not_in": lambda a, k: a is not None and a not in k,
    **{f"_fn_{name}": fn for name, (fn, _, _) in FUNCTIONS.items()},
    **{f"_tf_{name}": fn for name, (fn, _, _) in TIME_FUNCTIONS.items()},
}
