"""Rule conditions: a small, safe expression language, parsed to a checked AST and
compiled to Python closures. Rule text is never ``eval``-ed.

Syntax is a subset of Python expressions: ``and or not``, comparisons (chained too),
``in`` / ``not in`` with a literal list, ``+ - * / %``, numbers, strings, ``true false
null`` (or ``True False None``), feature names, and calls of the functions in
``segengine.rules.functions`` (``days_since(ts)``, ``hours_since(ts)`` and ``now()`` read the
decision's time).

Names have types (number, string, boolean, any); the checker refuses comparisons and
arithmetic that mix numbers and strings, so that such a rule fails ``rules check``
instead of silently never matching.

Missing values are ``null``: ordering comparisons and ``in`` with null are false,
arithmetic with null is null, null is false where a condition is expected.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .functions import ARITH, COMPARE, FUNCTIONS, HELPERS, POPULATION_FUNCTIONS, TIME_FUNCTIONS
from .names import did_you_mean

Env = Mapping[str, Any]

CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


class ExprError(ConfigError):
    """A condition that cannot be compiled; ``column`` is 1-based within the expression;
    ``unknown``: the name it reads that nothing defines (the caller knows the names to offer)."""

    def __init__(self, message: str, column: int = 1, unknown: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column
        self.unknown = unknown


NUMBER, STRING, BOOLEAN, ANY = "number", "string", "boolean", "any"
TypeOf = Callable[[str], "str | None"]  # name -> its type, None when unknown


@dataclass(frozen=True, slots=True)
class Expression:
    """A checked condition: its source, the names (features) it reads, and its Python
    translation (``code``, over local variables named by ``compile_dimension``)."""

    source: str
    names: frozenset[str]
    tree: ast.expr

    def __call__(self, env: Env) -> Any:
        """Evaluate on its own (tests, tools): its value for these names (``now`` from env)."""
        return compile_value(self, population=env.get("population"))(env, env.get("current"), env.get("now"))


def compile_expression(source: str, type_of: TypeOf | Callable[[str], bool]) -> Expression:
    """Parse and check ``source``; ``type_of`` gives each bare name's type (or says whether
    it exists, for callers without types)."""
    text = source.strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        offset = exc.offset or 0
        if not 1 <= offset <= len(text):
            raise ExprError("syntax error: the condition ends too early", len(text) + 1) from None
        raise ExprError(f"syntax error: {exc.msg}", offset) from None

    def typed(name: str) -> str | None:
        found = type_of(name)
        return ANY if found is True else (None if found is False else found)

    names: set[str] = set()
    _check(tree.body, typed, names)
    return Expression(source, frozenset(names), tree.body)


def _col(node: ast.AST) -> int:
    return getattr(node, "col_offset", 0) + 1


def _check(node: ast.AST, type_of: Callable[[str], str | None], names: set[str]) -> str:
    """Refuse every node outside the language; collect the names read; return the type."""
    match node:
        case ast.Constant(value=value) if value is None:
            return ANY
        case ast.Constant(value=value) if isinstance(value, bool):
            return BOOLEAN
        case ast.Constant(value=value) if isinstance(value, (int, float)):
            return NUMBER
        case ast.Constant(value=value) if isinstance(value, str):
            return STRING
        case ast.Name(id=name):
            if name in CONSTANTS:
                return BOOLEAN if isinstance(CONSTANTS[name], bool) else ANY
            found = type_of(name)
            if found is None:
                raise ExprError(f"unknown feature {name!r}", _col(node), unknown=name)
            names.add(name)
            return found
        case ast.BoolOp(values=values):
            for v in values:
                _check(v, type_of, names)
            return BOOLEAN
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            _check(operand, type_of, names)
            return BOOLEAN
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            _expect_number(operand, _check(operand, type_of, names), "'-'")
            return NUMBER
        case ast.BinOp(op=op, left=left, right=right) if type(op) in ARITH:
            _expect_number(left, _check(left, type_of, names), "arithmetic")
            _expect_number(right, _check(right, type_of, names), "arithmetic")
            return NUMBER
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            lhs = _check(left, type_of, names)
            for test, right in zip(ops, comparators):
                if isinstance(test, (ast.In, ast.NotIn)):
                    for member in _literal_list(right):
                        _expect_same(right, lhs, _type_of_value(member))
                elif type(test) in COMPARE:
                    rhs = _check(right, type_of, names)
                    _expect_same(right, lhs, rhs)
                    lhs = rhs
                else:
                    raise ExprError(f"comparison {type(test).__name__} not allowed", _col(right))
            return BOOLEAN
        case ast.Call(func=ast.Name(id=fname), args=args, keywords=[]) if fname in POPULATION_FUNCTIONS:
            if len(args) != POPULATION_FUNCTIONS[fname] or not isinstance(args[0], ast.Name):
                usage = "quantile_score(feature, n)" if fname == "quantile_score" else "pct_rank(feature)"
                raise ExprError(f"use {usage} with a feature name", _col(node))
            _expect_number(args[0], _check(args[0], type_of, names), f"{fname}()")
            if fname == "quantile_score" and not (
                isinstance(args[1], ast.Constant) and type(args[1].value) is int and args[1].value >= 2
            ):
                raise ExprError("quantile_score(feature, n) needs a whole number n >= 2", _col(args[1]))
            return NUMBER
        case ast.Call(func=ast.Name(id=fname), args=args, keywords=[]):
            spec = FUNCTIONS.get(fname) or TIME_FUNCTIONS.get(fname)
            if spec is None:
                known = [*FUNCTIONS, *TIME_FUNCTIONS, *POPULATION_FUNCTIONS]
                raise ExprError(f"unknown function {fname!r}{did_you_mean(fname, known)}", _col(node))
            _, lo, hi = spec
            if not lo <= len(args) <= hi:
                raise ExprError(f"{fname}() takes {lo}..{hi} arguments, got {len(args)}", _col(node))
            types = [_check(a, type_of, names) for a in args]
            if fname != "coalesce":
                for arg, t in zip(args, types):
                    _expect_number(arg, t, f"{fname}()")
            return NUMBER if fname != "coalesce" else (types[0] if len(set(types) - {ANY}) <= 1 else ANY)
        case _:
            raise ExprError(f"not allowed in a rule: {ast.unparse(node)!r}", _col(node))


def _type_of_value(value: Any) -> str:
    if value is None:
        return ANY
    if isinstance(value, bool):
        return BOOLEAN
    return NUMBER if isinstance(value, (int, float)) else STRING


def _expect_number(node: ast.AST, found: str, what: str) -> None:
    if found not in (NUMBER, ANY):
        raise ExprError(f"type mismatch: {what} needs numbers, {ast.unparse(node)!r} is a {found}", _col(node))


def _expect_same(node: ast.AST, left: str, right: str) -> None:
    if ANY not in (left, right) and left != right and {left, right} != {NUMBER, BOOLEAN}:
        raise ExprError(f"type mismatch: comparing a {left} with a {right} ({ast.unparse(node)!r})", _col(node))


def _literal(node: ast.AST) -> tuple[bool, Any]:
    """(True, value) for a constant, negative numbers included."""
    if isinstance(node, ast.Constant):
        return True, node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, -value
    return False, None


def _literal_list(node: ast.AST) -> frozenset[Any]:
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        literals = [_literal(e) for e in node.elts]
        if all(ok for ok, _ in literals):
            return frozenset(value for _, value in literals)
    raise ExprError("the right side of 'in' must be a literal list like ['a', 'b']", _col(node))


# -- translation to Python --------------------------------------------------------------
# Checked trees are translated to Python source built only from the node kinds above:
# names become local variables v0, v1, ... and constants are written with repr(), so no
# text of the rule reaches the generated code except as a literal value.
#
# Each function is translated twice. The exact form calls the null-safe helpers of
# segengine.rules.functions for every operator. The fast form writes a comparison of names
# and constants, and ``in``, as Python's own operators behind a null test, and leaves out the
# bool() of operands that are already true or false: the same value wherever it does not raise.
# Where it raises (an ordering of a number with a string, which Python refuses and the helpers
# call false) the function gives what the exact form gives for the same values.

_SYMBOLS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
FALLBACK = (TypeError, ZeroDivisionError)  # what the fast form can raise where the exact one does not
_BOOLEAN_NODES = (ast.Compare, ast.BoolOp)


class _Translator:
    def __init__(self, local: dict[str, str], fast: bool = False) -> None:
        self.local = local  # feature name -> local variable
        self.constants: dict[str, Any] = {}
        self.fast = fast

    def _operand(self, node: ast.AST) -> tuple[str, bool] | None:
        """A name or a constant as code, and whether it is a constant other than null;
        None for anything else (evaluated once only, by a helper)."""
        if isinstance(node, ast.Constant):
            return repr(node.value), node.value is not None
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return repr(CONSTANTS[node.id]), CONSTANTS[node.id] is not None
            return self.local[node.id], False
        return None

    def _inline(self, test: ast.cmpop, left: ast.AST, right: ast.AST, const: str | None) -> str | None:
        """The fast form of one comparison, or None where it is not written inline."""
        lhs = self._operand(left)
        if not self.fast or lhs is None:
            return None
        if const is not None:  # in / not in a literal list
            op = "not in" if isinstance(test, ast.NotIn) else "in"
            if lhs[0] == "None":
                return "False"
            return f"({lhs[0]} {op} {const})" if lhs[1] else f"({lhs[0]} is not None and {lhs[0]} {op} {const})"
        rhs = self._operand(right)
        if rhs is None:
            return None
        symbol = _SYMBOLS[type(test)]
        if isinstance(test, (ast.Eq, ast.NotEq)):
            return f"({lhs[0]} {symbol} {rhs[0]})"
        if "None" in (lhs[0], rhs[0]):
            return "False"  # an ordering with null is false
        guards = [f"{code} is not None" for code, constant in (lhs, rhs) if not constant]
        return "(" + " and ".join([*guards, f"{lhs[0]} {symbol} {rhs[0]}"]) + ")"

    def _truth(self, node: ast.AST) -> str:
        """An operand of and / or as true or false."""
        code = self(node)
        negation = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
        return code if self.fast and (isinstance(node, _BOOLEAN_NODES) or negation) else f"bool({code})"

    def __call__(self, node: ast.AST) -> str:  # one case per node kind
        match node:
            case ast.Constant(value=value):
                return repr(value)
            case ast.Name(id=name) if name in CONSTANTS:
                return repr(CONSTANTS[name])
            case ast.Name(id=name):
                return self.local[name]
            case ast.BoolOp(op=op, values=values):
                joiner = " and " if isinstance(op, ast.And) else " or "
                return "(" + joiner.join(self._truth(v) for v in values) + ")"
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return f"(not {self(operand)})"
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return f"_neg({self(operand)})"
            case ast.BinOp(op=op, left=left, right=right):
                return f"_op_{type(op).__name__}({self(left)}, {self(right)})"
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                parts: list[str] = []
                for test, right in zip(ops, comparators):
                    if isinstance(test, (ast.In, ast.NotIn)):
                        const = f"_k{len(self.constants)}"
                        self.constants[const] = _literal_list(right)
                        helper = "_not_in" if isinstance(test, ast.NotIn) else "_in"
                        parts.append(self._inline(test, left, right, const) or f"{helper}({self(left)}, {const})")
                        left = ast.Constant(None)  # what a chain compares next: null
                    else:
                        inline = self._inline(test, left, right, None)
                        parts.append(inline or f"_cmp_{type(test).__name__}({self(left)}, {self(right)})")
                        left = right
                return "(" + " and ".join(parts) + ")"
            case ast.Call(func=ast.Name(id=fname), args=[ast.Name(id=feature), *rest]) if fname in POPULATION_FUNCTIONS:
                extra = "".join(f", {self(a)}" for a in rest)
                return f"population.{fname}({feature!r}, {self.local[feature]}{extra})"
            case ast.Call(func=ast.Name(id=fname), args=args) if fname in TIME_FUNCTIONS:
                return f"_tf_{fname}(" + ", ".join(["now", *(self(a) for a in args)]) + ")"
            case ast.Call(func=ast.Name(id=fname), args=args):
                return f"_fn_{fname}(" + ", ".join(self(a) for a in args) + ")"
        raise ExprError(f"not allowed in a rule: {ast.unparse(node)!r}", _col(node))


Selector = Callable[[Env, Any, Any], tuple[int, tuple[Any, ...]]]


def _build(
    header: str,
    names: list[str],
    body: Callable[[_Translator], list[str]],
    local: dict[str, str],
    name: str,
    population: Any = None,
) -> Any:
    """The function ``header``: it reads the features ``names`` into their locals, then runs
    ``body`` (its lines, by a translator over ``local``), in the fast form where that differs
    from the exact one, which it calls instead where the fast one raises FALLBACK."""
    reads = [f"    {local[feature]} = F[{feature!r}]" for feature in names]
    exact, fast = _Translator(local), _Translator(local, fast=True)
    exact_body, fast_body = body(exact), body(fast)
    function = _define([header, *reads, *exact_body], exact, name, population)
    if fast_body == exact_body:
        return function
    lines = [header, *reads, "    try:", *(f"    {line}" for line in fast_body), "    except _FALLBACK:",
             "        return _exact(F, current, now)"]  # fmt: skip
    return _define(lines, fast, name, population, _exact=function, _FALLBACK=FALLBACK)


def _define(lines: list[str], translate: _Translator, name: str, population: Any = None, **extra: Any) -> Any:
    namespace: dict[str, Any] = {
        "__builtins__": {"bool": bool},
        **HELPERS,
        **translate.constants,
        "population": population,
        **extra,
    }
    exec(compile("\n".join(lines), f"<rules:{name}>", "exec"), namespace)  # source built from a checked AST only
    return namespace[name]


def _locals(expressions: list[Expression], current_name: str) -> tuple[list[str], dict[str, str]]:
    names = sorted(set().union(*(e.names for e in expressions)) - {current_name}) if expressions else []
    local = {name: f"v{i}" for i, name in enumerate(names)}
    local[current_name] = "current"
    return names, local


def uses_time(expression: Expression) -> bool:
    """Whether the expression calls a function of the decision's time."""
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in TIME_FUNCTIONS
        for n in ast.walk(expression.tree)
    )


def population_features(expression: Expression) -> set[str]:
    """The features whose population distribution the expression reads."""
    return {
        node.args[0].id
        for node in ast.walk(expression.tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in POPULATION_FUNCTIONS
        and node.args
        and isinstance(node.args[0], ast.Name)
    }


def compile_dimension(
    segments: list[tuple[str, Expression, Expression]], current_name: str = "current", population: Any = None
) -> Selector:
    """One function for an ordered list of segments (name, enter, stay):
    (features, current, now) -> (index of the first segment that holds or -1, the values
    read in sorted name order). A segment holds when it is the current one and its stay
    condition holds, or it is not and its enter condition holds. Each feature is read
    once, up front."""
    names, local = _locals([e for _, enter, stay in segments for e in (enter, stay)], current_name)
    values = "(" + "".join(f"{local[name]}, " for name in names) + ")"

    def body(translate: _Translator) -> list[str]:
        lines = []
        for index, (segment, enter, stay) in enumerate(segments):
            if enter is stay:
                test = translate(enter.tree)
            else:
                staying = f"(current == {segment!r} and {translate(stay.tree)})"
                test = f"({staying} or (current != {segment!r} and {translate(enter.tree)}))"
            lines += [f"    if {test}:", f"        return {index}, {values}"]
        lines.append(f"    return -1, {values}")
        return lines

    return _build("def _dimension(F, current, now):", names, body, local, "_dimension", population)  # type: ignore[no-any-return]


def compile_conditions(conditions: list[Expression], current_name: str = "current") -> Selector:
    """Plain first-match over conditions (no enter/stay distinction)."""
    return compile_dimension([(f"#{i}", c, c) for i, c in enumerate(conditions)], current_name)


def compile_value(
    expression: Expression, current_name: str = "current", population: Any = None
) -> Callable[[Env, Any, Any], Any]:
    """(features, current, now) -> the expression's value (derived features)."""
    names, local = _locals([expression], current_name)

    def body(translate: _Translator) -> list[str]:
        return [f"    return {translate(expression.tree)}"]

    return _build("def _value(F, current, now):", names, body, local, "_value", population)  # type: ignore[no-any-return]
