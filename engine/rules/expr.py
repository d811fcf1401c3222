"""Rule conditions: a small, safe expression language, parsed to a checked AST and
compiled to Python closures. Rule text is never ``eval``-ed.

Syntax is a subset of Python expressions: ``and or not``, comparisons (chained too),
``in`` / ``not in`` with a literal list, ``+ - * / %``, numbers, strings, ``true false
null`` (or ``True False None``), feature names, and calls of the functions in ``FUNCTIONS``.

Missing values are ``null``: ordering comparisons and ``in`` with null are false,
arithmetic with null is null, null is false where a condition is expected.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping

Env = Mapping[str, Any]
Compiled = Callable[[Env], Any]

CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


class ExprError(ValueError):
    """A condition that cannot be compiled; ``column`` is 1-based within the expression."""

    def __init__(self, message: str, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


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


FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    # name: (function, min args, max args)
    "coalesce": (_coalesce, 1, 16),
    "min": (_nullable_min, 1, 16),
    "max": (_nullable_max, 1, 16),
    "abs": (_null_safe(abs), 1, 1),
    "round": (_null_safe(round), 1, 2),
}

_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled condition and the names (features) it reads."""

    source: str
    names: frozenset[str]
    fn: Compiled

    def __call__(self, env: Env) -> Any:
        return self.fn(env)


def compile_expression(source: str, is_name: Callable[[str], bool]) -> Expression:
    """Parse and check ``source``; ``is_name`` says which bare names exist."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error: {exc.msg}", exc.offset or 1) from None
    names: set[str] = set()
    fn = _compile(tree.body, is_name, names)
    return Expression(source, frozenset(names), fn)


def _col(node: ast.AST) -> int:
    return getattr(node, "col_offset", 0) + 1


def _compile(node: ast.AST, is_name: Callable[[str], bool], names: set[str]) -> Compiled:
    match node:
        case ast.Constant(value=value) if value is None or isinstance(value, (bool, int, float, str)):
            return lambda env: value
        case ast.Name(id=name):
            if name in CONSTANTS:
                constant = CONSTANTS[name]
                return lambda env: constant
            if not is_name(name):
                raise ExprError(f"unknown feature {name!r}", _col(node))
            names.add(name)
            return lambda env: env[name]
        case ast.BoolOp(op=op, values=values):
            parts = [_compile(v, is_name, names) for v in values]
            if isinstance(op, ast.And):
                return lambda env: all(p(env) for p in parts)
            return lambda env: any(p(env) for p in parts)
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            inner = _compile(operand, is_name, names)
            return lambda env: not inner(env)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            inner = _compile(operand, is_name, names)
            return lambda env: None if (v := inner(env)) is None else -v
        case ast.BinOp(op=op, left=left, right=right) if type(op) in _ARITH:
            fn = _ARITH[type(op)]
            lhs, rhs = _compile(left, is_name, names), _compile(right, is_name, names)

            def arith(env: Env) -> Any:
                a, b = lhs(env), rhs(env)
                if a is None or b is None:
                    return None
                try:
                    return fn(a, b)
                except (ZeroDivisionError, TypeError):
                    return None

            return arith
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            return _compile_compare(left, ops, comparators, is_name, names)
        case ast.Call(func=ast.Name(id=fname), args=args, keywords=[]):
            if fname not in FUNCTIONS:
                raise ExprError(f"unknown function {fname!r}", _col(node))
            fn, lo, hi = FUNCTIONS[fname]
            if not lo <= len(args) <= hi:
                raise ExprError(f"{fname}() takes {lo}..{hi} arguments, got {len(args)}", _col(node))
            compiled = [_compile(a, is_name, names) for a in args]
            return lambda env: fn(*(a(env) for a in compiled))
    raise ExprError(f"not allowed in a rule: {ast.unparse(node)!r}", _col(node))


def _literal_list(node: ast.AST) -> frozenset[Any]:
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and all(isinstance(e, ast.Constant) for e in node.elts):
        return frozenset(e.value for e in node.elts)  # type: ignore[attr-defined]
    raise ExprError("the right side of 'in' must be a literal list like ['a', 'b']", _col(node))


def _compile_compare(
    left: ast.AST, ops: list[ast.cmpop], comparators: list[ast.expr], is_name: Callable[[str], bool], names: set[str]
) -> Compiled:
    steps: list[Callable[[Any, Env], tuple[bool, Any]]] = []
    for op, right in zip(ops, comparators):
        if isinstance(op, (ast.In, ast.NotIn)):
            members = _literal_list(right)
            negate = isinstance(op, ast.NotIn)
            steps.append(lambda a, env, m=members, n=negate: (a is not None and ((a in m) != n), None))
            continue
        if type(op) not in _COMPARE:
            raise ExprError(f"comparison {type(op).__name__} not allowed", _col(right))
        fn = _COMPARE[type(op)]
        rhs = _compile(right, is_name, names)
        ordering = not isinstance(op, (ast.Eq, ast.NotEq))

        def step(a: Any, env: Env, fn: Callable[[Any, Any], bool] = fn, rhs: Compiled = rhs, ordering: bool = ordering) -> tuple[bool, Any]:
            b = rhs(env)
            if ordering and (a is None or b is None):
                return False, b
            try:
                return bool(fn(a, b)), b
            except TypeError:
                return False, b

        steps.append(step)
    lhs = _compile(left, is_name, names)

    def compare(env: Env) -> bool:
        a = lhs(env)
        for s in steps:
            ok, a = s(a, env)
            if not ok:
                return False
        return True

    return compare
