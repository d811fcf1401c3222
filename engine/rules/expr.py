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
    """A checked condition: its source, the names (features) it reads, and its Python
    translation (``code``, over local variables named by ``compile_dimension``)."""

    source: str
    names: frozenset[str]
    tree: ast.expr

    def __call__(self, env: Env) -> Any:
        """Evaluate on its own (tests, tools); rules evaluate whole dimensions at once."""
        return compile_conditions([self])(env, env.get("current"))[0] == 0


def compile_expression(source: str, is_name: Callable[[str], bool]) -> Expression:
    """Parse and check ``source``; ``is_name`` says which bare names exist."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error: {exc.msg}", exc.offset or 1) from None
    names: set[str] = set()
    _check(tree.body, is_name, names)
    return Expression(source, frozenset(names), tree.body)


def _col(node: ast.AST) -> int:
    return getattr(node, "col_offset", 0) + 1


def _check(node: ast.AST, is_name: Callable[[str], bool], names: set[str]) -> None:
    """Refuse every node outside the language; collect the names read."""
    match node:
        case ast.Constant(value=value) if value is None or isinstance(value, (bool, int, float, str)):
            return
        case ast.Name(id=name):
            if name in CONSTANTS:
                return
            if not is_name(name):
                raise ExprError(f"unknown feature {name!r}", _col(node))
            names.add(name)
        case ast.BoolOp(values=values):
            for v in values:
                _check(v, is_name, names)
        case ast.UnaryOp(op=ast.Not() | ast.USub(), operand=operand):
            _check(operand, is_name, names)
        case ast.BinOp(op=op, left=left, right=right) if type(op) in _ARITH:
            _check(left, is_name, names)
            _check(right, is_name, names)
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            _check(left, is_name, names)
            for op, right in zip(ops, comparators):
                if isinstance(op, (ast.In, ast.NotIn)):
                    _literal_list(right)
                elif type(op) in _COMPARE:
                    _check(right, is_name, names)
                else:
                    raise ExprError(f"comparison {type(op).__name__} not allowed", _col(right))
        case ast.Call(func=ast.Name(id=fname), args=args, keywords=[]):
            if fname not in FUNCTIONS:
                raise ExprError(f"unknown function {fname!r}", _col(node))
            _, lo, hi = FUNCTIONS[fname]
            if not lo <= len(args) <= hi:
                raise ExprError(f"{fname}() takes {lo}..{hi} arguments, got {len(args)}", _col(node))
            for a in args:
                _check(a, is_name, names)
        case _:
            raise ExprError(f"not allowed in a rule: {ast.unparse(node)!r}", _col(node))


def _literal_list(node: ast.AST) -> frozenset[Any]:
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and all(isinstance(e, ast.Constant) for e in node.elts):
        return frozenset(e.value for e in node.elts)  # type: ignore[attr-defined]
    raise ExprError("the right side of 'in' must be a literal list like ['a', 'b']", _col(node))


# -- translation to Python --------------------------------------------------------------
# Checked trees are translated to Python source built only from the node kinds above:
# names become local variables v0, v1, ... and constants are written with repr(), so no
# text of the rule reaches the generated code except as a literal value.


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


HELPERS: dict[str, Any] = {
    **{f"_cmp_{op.__name__}": (_equality if op in (ast.Eq, ast.NotEq) else _ordering)(fn) for op, fn in _COMPARE.items()},
    **{f"_op_{op.__name__}": _arith(fn) for op, fn in _ARITH.items()},
    "_neg": lambda a: None if a is None else -a,
    **{f"_fn_{name}": fn for name, (fn, _, _) in FUNCTIONS.items()},
}


class _Translator:
    def __init__(self, local: dict[str, str]) -> None:
        self.local = local  # feature name -> local variable
        self.constants: dict[str, Any] = {}

    def __call__(self, node: ast.AST) -> str:  # noqa: C901 - one case per node kind
        match node:
            case ast.Constant(value=value):
                return repr(value)
            case ast.Name(id=name) if name in CONSTANTS:
                return repr(CONSTANTS[name])
            case ast.Name(id=name):
                return self.local[name]
            case ast.BoolOp(op=op, values=values):
                joiner = " and " if isinstance(op, ast.And) else " or "
                return "(" + joiner.join(f"bool({self(v)})" for v in values) + ")"
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return f"(not {self(operand)})"
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return f"_neg({self(operand)})"
            case ast.BinOp(op=op, left=left, right=right):
                return f"_op_{type(op).__name__}({self(left)}, {self(right)})"
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                parts, lhs = [], self(left)
                for op, right in zip(ops, comparators):
                    if isinstance(op, (ast.In, ast.NotIn)):
                        const = f"_k{len(self.constants)}"
                        self.constants[const] = _literal_list(right)
                        test = "not in" if isinstance(op, ast.NotIn) else "in"
                        parts.append(f"({lhs} is not None and {lhs} {test} {const})")
                        lhs = "None"
                    else:
                        rhs = self(right)
                        parts.append(f"_cmp_{type(op).__name__}({lhs}, {rhs})")
                        lhs = rhs
                return "(" + " and ".join(parts) + ")"
            case ast.Call(func=ast.Name(id=fname), args=args):
                return f"_fn_{fname}(" + ", ".join(self(a) for a in args) + ")"
        raise ExprError(f"not allowed in a rule: {ast.unparse(node)!r}", _col(node))


def compile_conditions(conditions: list[Expression], current_name: str = "current") -> Callable[[Env, Any], tuple[int, tuple[Any, ...]]]:
    """One function for an ordered list of conditions: (features, current) -> (the index of
    the first that holds or -1, the values read in sorted name order). Each feature the
    conditions read is read once, up front."""
    names = sorted(set().union(*(c.names for c in conditions)) - {current_name}) if conditions else []
    local = {name: f"v{i}" for i, name in enumerate(names)}
    local[current_name] = "current"
    translate = _Translator(local)
    lines = ["def _dimension(F, current):"]
    for name in names:
        lines.append(f"    {local[name]} = F[{name!r}]")
    values = "(" + "".join(f"{local[name]}, " for name in names) + ")"
    for index, cond in enumerate(conditions):
        lines.append(f"    if {translate(cond.tree)}:")
        lines.append(f"        return {index}, {values}")
    lines.append(f"    return -1, {values}")
    namespace: dict[str, Any] = {"__builtins__": {"bool": bool}, **HELPERS, **translate.constants}
    exec(compile("\n".join(lines), "<rules>", "exec"), namespace)  # noqa: S102 - source built from a checked AST only
    return namespace["_dimension"]  # type: ignore[no-any-return]
