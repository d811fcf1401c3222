"""Rule parsing and evaluation, pure (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segengine.evaluate import CHANGES_TOPIC, MEMBERS_TOPIC, fold_customer
from segengine.events import Event, Source
from segengine.records import TopicPartition
from segengine.rules import parse_rules
from segengine.rules.expr import ExprError, compile_expression
from segengine.state import DAY_MS, CustomerState

ROOT = Path(__file__).resolve().parents[2]
# The two first dimensions: value tier, then lifecycle.
DEFAULT = parse_rules(
    "name: t\ndimensions:\n"
    + (ROOT / "rules" / "value_tier.yaml").read_text().split("dimensions:\n", 1)[1]
    + (ROOT / "rules" / "lifecycle.yaml").read_text().split("dimensions:\n", 1)[1]
)
T0 = 1_600_000_000_000


def names(n: str) -> bool:
    return n in {"a", "b", "s"}


@pytest.mark.parametrize(
    ("source", "env", "expected"),
    [
        ("a > 1 and b < 3", {"a": 2, "b": 2}, True),
        ("a > 1", {"a": None}, False),  # ordering with null is false
        ("not (a > 1)", {"a": None}, True),
        ("a == null", {"a": None}, True),
        ("a + b > 3", {"a": None, "b": 5}, False),  # arithmetic with null is null
        ("coalesce(a, 0) + 1 == 1", {"a": None}, True),
        ("s in ['x', 'y']", {"s": "y"}, True),
        ("s not in ['x', 'y']", {"s": None}, False),
        ("1 < a <= 3", {"a": 3}, True),
        ("a / b > 1", {"a": 1, "b": 0}, False),  # division by zero is null
        ("max(a, b) == 4 and min(a, b) == 1", {"a": 1, "b": 4}, True),
    ],
)
def test_expression_semantics(source: str, env: dict[str, object], expected: bool) -> None:
    assert bool(compile_expression(source, names)(env)) is expected


@pytest.mark.parametrize(
    "source",
    ["__import__('os')", "a.__class__", "open('x')", "[x for x in a]", "lambda: 1", "a[0]", "zz > 1", "a if b else s"],
)
def test_unsafe_or_unknown_expressions_are_refused(source: str) -> None:
    with pytest.raises(ExprError):
        compile_expression(source, names)


@given(a=st.none() | st.integers(-5, 5), b=st.none() | st.integers(-5, 5))
def test_null_safe_comparison_matches_reference(a: int | None, b: int | None) -> None:
    expr = compile_expression("a < b or a == b", names)
    reference = (a is not None and b is not None and a < b) or a == b
    assert bool(expr({"a": a, "b": b})) is reference


def test_version_is_name_and_content_hash() -> None:
    text = "name: t\ndimensions:\n  d:\n    segments: []\n    default: all\n"
    assert parse_rules(text).version.startswith("t@") and parse_rules(text).version == parse_rules(text).version
    assert parse_rules(text + "# changed\n").version != parse_rules(text).version


def purchase(offset: int, ts: int, amount: float) -> Event:
    return Event(
        f"e{offset}",
        "c1",
        "purchase",
        ts,
        {"amount": amount, "order_id": f"o{offset}"},
        Source("events.purchase", 0, offset),
    )


def run(state: CustomerState, *events: Event, committed: dict[str, int] | None = None, writer: str | None = None):  # type: ignore[no-untyped-def]
    return fold_customer(
        DEFAULT,
        state,
        "c1",
        list(events),
        now_for=lambda ts: ts,
        committed=committed or {},
        dedupe_horizon_ms=7 * DAY_MS,
        writer=writer,
    )


def changes(result) -> list[tuple[str, str | None, str | None]]:  # type: ignore[no-untyped-def]
    return [(o.value["dimension"], o.value["from"], o.value["to"]) for o in result.outputs if o.topic == CHANGES_TOPIC]


def test_lifecycle_and_value_tier_walk() -> None:
    state = CustomerState()
    r = run(state, purchase(1, T0, 30.0))
    assert changes(r) == [("value_tier", None, "C"), ("lifecycle", None, "new")]
    r = run(state, purchase(2, T0 + 10 * DAY_MS, 40.0))
    assert changes(r) == [("value_tier", "C", "B"), ("lifecycle", "new", "active")]
    r = run(state, purchase(3, T0 + 100 * DAY_MS, 200.0))  # back after 90 days away
    # first what time alone did meanwhile (at risk 60 days after the last purchase), then the purchase
    assert changes(r) == [
        ("lifecycle", "active", "at_risk"),
        ("value_tier", "B", "A"),
        ("lifecycle", "at_risk", "reactivated"),
    ]
    assert state.members == {"value_tier": "A", "lifecycle": "reactivated"}


def test_change_records_follow_the_contract() -> None:
    state = CustomerState()
    r = run(state, purchase(7, T0, 300.0))
    change = next(o.value for o in r.outputs if o.topic == CHANGES_TOPIC and o.value["dimension"] == "value_tier")
    assert change["cause"] == {
        "kind": "event",
        "event_id": "e7",
        "topic": "events.purchase",
        "partition": 0,
        "offset": 7,
    }
    assert change["from"] is None and change["to"] == "A" and change["rules_version"] == DEFAULT.version
    assert change["features"] == {"spend_365d": 300.0, "orders_365d": 1} and change["reason"].startswith(
        "value_tier.A: "
    )
    members = next(o.value for o in r.outputs if o.topic == MEMBERS_TOPIC)
    assert members["memberships"] == {"value_tier": "A", "lifecycle": "new"}
    assert r.population == {("value_tier", "A"): 1, ("lifecycle", "new"): 1}


def test_change_ids_are_deterministic_and_redelivery_resends_the_outbox() -> None:
    a, b = CustomerState(), CustomerState()
    first = run(a, purchase(1, T0, 10.0))
    assert [o.value for o in first.outputs] == [o.value for o in run(b, purchase(1, T0, 10.0)).outputs]
    # The same record again (the worker died before the commit): another writer finds the outbox
    # and sends it again; the writer that wrote it knows it published, and sends nothing.
    assert run(a, purchase(1, T0, 10.0)).outputs == []
    again = run(a, purchase(1, T0, 10.0), writer="restarted")
    assert again.applied == 0 and again.redelivered == 1
    assert [o.value for o in again.outputs] == [o.value for o in first.outputs]
    assert a.orders == 1
    # Once the record is committed, its outbox entries are dropped.
    run(a, purchase(2, T0 + DAY_MS, 1.0), committed={TopicPartition("events.purchase", 0): 2})
    assert all(p.offset == 2 for p in a.pending)
