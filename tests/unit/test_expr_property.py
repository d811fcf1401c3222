"""The expression language against a plain-Python reference semantics (property test):
random well-typed expressions over features that may be missing (null), compiled by the
rules compiler, give the value the reference gives, for random feature values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from segengine.rules.expr import NUMBER, compile_expression, compile_value

NAMES = ("a", "b", "c")
Env = dict[str, Any]
Ref = Callable[[Env], Any]
Expr = tuple[str, Ref]  # (source text, reference evaluator)


# -- the reference: what docs/rules.md promises, written out directly ---------------------


def arith(op: str, x: Any, y: Any) -> Any:
    if x is None or y is None:
        return None
    if op in "/%" and y == 0:
        return None
    return {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else None, "%": x % y if y else None}[op]


def order(op: str, x: Any, y: Any) -> bool:
    if x is None or y is None:
        return False
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


def equal(op: str, x: Any, y: Any) -> bool:
    return (x == y) if op == "==" else (x != y)


# -- generators of (source, reference) pairs ----------------------------------------------

numbers_leaf = st.one_of(
    st.integers(-20, 20).map(lambda n: (f"({n})", lambda env, n=n: n)),
    st.sampled_from(NAMES).map(lambda name: (name, lambda env, name=name: env[name])),
    st.just(("null", lambda env: None)),
)


def numeric_node(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    binary = st.tuples(st.sampled_from("+-*/%"), children, children).map(
        lambda t: (f"({t[1][0]} {t[0]} {t[2][0]})", lambda env, t=t: arith(t[0], t[1][1](env), t[2][1](env)))
    )
    negate = children.map(lambda c: (f"(-{c[0]})", lambda env, c=c: None if c[1](env) is None else -c[1](env)))
    call = st.tuples(st.sampled_from(["coalesce", "min", "max"]), st.lists(children, min_size=1, max_size=3)).map(
        lambda t: (f"{t[0]}({', '.join(s for s, _ in t[1])})", lambda env, t=t: _call(t[0], [f(env) for _, f in t[1]]))
    )
    absolute = children.map(lambda c: (f"abs({c[0]})", lambda env, c=c: None if c[1](env) is None else abs(c[1](env))))
    return st.one_of(binary, negate, call, absolute)


def _call(name: str, args: list[Any]) -> Any:
    present = [a for a in args if a is not None]
    if name == "coalesce":
        return present[0] if present else None
    if not present:
        return None
    return min(present) if name == "min" else max(present)


numbers = st.recursive(numbers_leaf, numeric_node, max_leaves=6)


def conditions_leaf() -> st.SearchStrategy[Expr]:
    ordering = st.tuples(st.sampled_from(["<", "<=", ">", ">="]), numbers, numbers).map(
        lambda t: (f"({t[1][0]} {t[0]} {t[2][0]})", lambda env, t=t: order(t[0], t[1][1](env), t[2][1](env)))
    )
    equality = st.tuples(st.sampled_from(["==", "!="]), numbers, numbers).map(
        lambda t: (f"({t[1][0]} {t[0]} {t[2][0]})", lambda env, t=t: equal(t[0], t[1][1](env), t[2][1](env)))
    )
    membership = st.tuples(numbers, st.lists(st.integers(-3, 3), min_size=1, max_size=3), st.booleans()).map(
        lambda t: (
            f"({t[0][0]} {'not in' if t[2] else 'in'} {list(t[1])})",
            lambda env, t=t: (v := t[0][1](env)) is not None and ((v not in t[1]) if t[2] else (v in t[1])),
        )
    )
    return st.one_of(ordering, equality, membership)


def logic_node(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    both = st.tuples(st.sampled_from(["and", "or"]), children, children).map(
        lambda t: (
            f"({t[1][0]} {t[0]} {t[2][0]})",
            lambda env, t=t: (
                (bool(t[1][1](env)) and bool(t[2][1](env)))
                if t[0] == "and"
                else (bool(t[1][1](env)) or bool(t[2][1](env)))
            ),
        )
    )
    negation = children.map(lambda c: (f"(not {c[0]})", lambda env, c=c: not c[1](env)))
    return st.one_of(both, negation)


conditions = st.recursive(conditions_leaf(), logic_node, max_leaves=5)
environments = st.fixed_dictionaries({name: st.one_of(st.none(), st.integers(-10, 10)) for name in NAMES})


def compiled(source: str) -> Callable[[Env], Any]:
    expression = compile_expression(source, lambda name: NUMBER if name in NAMES else None)
    fn = compile_value(expression)
    return lambda env: fn(env, None, 0)


@settings(max_examples=400, deadline=None)
@given(expr=numbers, env=environments)
def test_arithmetic_matches_the_reference(expr: Expr, env: Env) -> None:
    source, reference = expr
    assert compiled(source)(env) == reference(env), source


@settings(max_examples=400, deadline=None)
@given(expr=conditions, env=environments)
def test_conditions_match_the_reference(expr: Expr, env: Env) -> None:
    source, reference = expr
    assert compiled(source)(env) == reference(env), source
