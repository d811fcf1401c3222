"""The expression language against a plain-Python reference semantics (property test):
random well-typed expressions over features that may be missing (null), compiled by the
rules compiler, give the value the reference gives, for random feature values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from segengine.rules.expr import ANY, NUMBER, compile_dimension, compile_expression, compile_value

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


# -- the fast form against the exact one ----------------------------------------------------
# The compiled functions write comparisons as Python's own operators (segengine.rules.expr);
# where Python refuses one (a number ordered against a string), the function gives what the
# helper-only form gives. Features of any type can hold anything at all.

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.floats(allow_nan=True),
    st.sampled_from(["", "a", "10"]),
    st.lists(st.integers(-2, 2), max_size=2),
)


def exact_form(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The helper-only function a fast one falls back to (the fast one itself when they are one)."""
    return fn.__globals__.get("_exact", fn)  # type: ignore[no-any-return]


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return "value", fn(*args)
    except Exception as exc:  # the same error both ways counts as the same outcome
        return "raises", type(exc)


def same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] == "value" and b[0] == "value" and a[1] != a[1] and b[1] != b[1]:
        return True  # NaN
    return a == b


@settings(max_examples=500, deadline=None)
@given(expr=st.one_of(conditions, numbers), env=st.fixed_dictionaries({name: anything for name in NAMES}))
def test_fast_form_gives_what_the_exact_form_gives(expr: Expr, env: Env) -> None:
    source, _ = expr
    fn = compile_value(compile_expression(source, lambda name: ANY if name in NAMES else None))
    assert same(outcome(fn, env, None, 0), outcome(exact_form(fn), env, None, 0)), (source, env)


@settings(max_examples=300, deadline=None)
@given(
    segments=st.lists(conditions, min_size=1, max_size=4),
    env=st.fixed_dictionaries({name: anything for name in NAMES}),
    current=st.sampled_from([None, "s0", "s1"]),
)
def test_fast_dimension_gives_what_the_exact_one_gives(segments: list[Expr], env: Env, current: str | None) -> None:
    compiled_segments = [
        (f"s{i}", e, e)
        for i, e in enumerate(compile_expression(s, lambda name: ANY if name in NAMES else None) for s, _ in segments)
    ]
    fn = compile_dimension(compiled_segments)
    assert same(outcome(fn, env, current, 0), outcome(exact_form(fn), env, current, 0)), (segments, env)


def test_an_ordering_python_refuses_is_false_as_the_rules_promise() -> None:
    fn = compile_value(compile_expression("a > 3 or b == 'x'", lambda name: ANY))
    assert exact_form(fn) is not fn  # the comparison is written inline
    assert fn({"a": "text", "b": "x"}, None, 0) is True  # "text" > 3 raises in Python: false here
    assert fn({"a": "text", "b": None}, None, 0) is False
    assert fn({"a": 4, "b": None}, None, 0) is True
