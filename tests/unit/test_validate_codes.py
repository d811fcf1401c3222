"""Validation, pure: every reject code, and valid events of every type."""

from __future__ import annotations

import base64

import orjson
import pytest

from segengine.dlq import dlq_record, original_value
from segengine.events import REJECT_CODES, Event, Rejected
from segengine.validate import _TYPE_CHECKS, validate

NOW = 1_800_000_000_000
TOPIC = {"browse": "events.browse", "purchase": "events.purchase", "refund": "events.purchase",
         "feedback": "events.feedback", "profile": "events.profile", "erase": "events.profile"}  # fmt: skip
VALID = {
    "browse": {"action": "add_to_cart", "product_id": "p1", "category": "running", "price": 80},
    "purchase": {"order_id": "o1", "amount": 99.5, "currency": "EUR", "channel": "pos", "items": [{"sku": "s", "category": "c", "qty": 1, "price": 99.5}]},
    "refund": {"order_id": "o1", "amount": 10},
    "feedback": {"kind": "nps", "score": 10, "text": "great"},
    "profile": {"attributes": {"age": 31, "city": "Chengdu", "vip": True, "nickname": None}},
    "erase": {},
}  # fmt: skip


def event(type_: str, **override: object) -> dict[str, object]:
    return {"event_id": "e1", "customer_id": "c1", "type": type_, "ts": NOW - 1000, **VALID[type_], **override}


def check(
    value: bytes | dict[str, object], topic: str = "events.purchase", key: bytes | None = b"c1"
) -> Event | Rejected:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return validate(topic, 2, 7, key, raw, now_ms=NOW, max_bytes=8192)


def nested(depth: int) -> object:
    """A value that makes the event ``depth`` levels deep when it is a top-level field."""
    value: object = []
    for _ in range(depth - 2):
        value = [value]
    return value


@pytest.mark.parametrize("type_", sorted(VALID))
def test_valid_events_of_every_type_are_accepted(type_: str) -> None:
    result = check(event(type_), TOPIC[type_])
    assert isinstance(result, Event), result
    assert (result.customer_id, result.type, result.ts, result.source.offset) == ("c1", type_, NOW - 1000, 7)


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [
        ("2024-03-01T08:00:00+08:00", 1709251200000),
        ("2024-03-01T00:00:00Z", 1709251200000),
        ("2024-03-01T00:00:00.250Z", 1709251200250),
        (1709251200000, 1709251200000),
    ],
)
def test_timestamps_rfc3339_with_offset_or_epoch_ms(ts: object, expected_ms: int) -> None:
    result = check(event("purchase", ts=ts))
    assert isinstance(result, Event) and result.ts == expected_ms


@pytest.mark.parametrize(
    ("value", "topic", "code"),
    [
        (b'{"x": "' + b"y" * 9000 + b'"}', "events.purchase", "too_large"),
        (b"\xff\xfe{}", "events.purchase", "not_utf8"),
        (b"{nope", "events.purchase", "not_json"),
        (b"", "events.purchase", "not_json"),
        (b"[1, 2]", "events.purchase", "not_object"),
        ({k: v for k, v in event("purchase").items() if k != "event_id"}, "events.purchase", "missing_field"),
        (event("purchase", ts=None), "events.purchase", "missing_field"),
        (event("purchase", order_id=None), "events.purchase", "missing_field"),
        (event("purchase", customer_id=""), "events.purchase", "empty_id"),
        (event("purchase", event_id="x" * 129), "events.purchase", "empty_id"),
        (event("purchase", customer_id=42), "events.purchase", "wrong_type"),
        (event("purchase", amount="12"), "events.purchase", "wrong_type"),
        (event("purchase", amount=True), "events.purchase", "wrong_type"),
        (event("profile", attributes={"tags": ["a"]}), "events.profile", "wrong_type"),
        (event("browse"), "events.purchase", "unknown_type"),
        (event("purchase", type="teleport"), "events.purchase", "unknown_type"),
        (event("browse", action="teleport"), "events.browse", "unknown_action"),
        (event("feedback", kind="rant"), "events.feedback", "unknown_action"),
        (event("purchase", ts="yesterday"), "events.purchase", "bad_ts"),
        (event("purchase", ts="2024-03-01T08:00:00"), "events.purchase", "bad_ts"),  # no offset
        (event("purchase", ts=-5), "events.purchase", "bad_ts"),
        (event("purchase", ts=1.5e12), "events.purchase", "bad_ts"),
        (event("purchase", ts=NOW + 3_600_000), "events.purchase", "future_ts"),
        (event("purchase", amount=-1), "events.purchase", "bad_value"),
        (event("refund", amount=0), "events.purchase", "bad_value"),
        (event("feedback", score=11), "events.feedback", "bad_value"),
        (event("feedback", kind="csat", score=0), "events.feedback", "bad_value"),
        (event("purchase", currency="euro"), "events.purchase", "bad_value"),
        (event("purchase", schema=2), "events.purchase", "bad_value"),
        (event("purchase", schema=True), "events.purchase", "bad_value"),
        # a field of the wrong JSON type is reported, never used (membership tests on str only)
        (event("browse", action=["view"]), "events.browse", "wrong_type"),
        (event("browse", action={"view": 1}), "events.browse", "wrong_type"),
        (event("browse", action=None), "events.browse", "missing_field"),
        (event("feedback", kind={"nps": 1}), "events.feedback", "wrong_type"),
        (event("feedback", kind=["nps"]), "events.feedback", "wrong_type"),
        (event("feedback", score=True), "events.feedback", "wrong_type"),
        (event("feedback", score=9.0), "events.feedback", "wrong_type"),
        (event("purchase", type=["purchase"]), "events.purchase", "unknown_type"),
        (event("purchase", ts=True), "events.purchase", "bad_ts"),
        (event("purchase", ts=[NOW]), "events.purchase", "bad_ts"),
        (event("purchase", source=["web"]), "events.purchase", "wrong_type"),
        (event("purchase", order_id=7), "events.purchase", "wrong_type"),
        (event("purchase", currency=["EUR"]), "events.purchase", "bad_value"),
        (event("purchase", channel={}), "events.purchase", "wrong_type"),
        (event("purchase", items={"sku": "s"}), "events.purchase", "wrong_type"),
        (event("purchase", items=[1]), "events.purchase", "wrong_type"),
        (event("purchase", items=[{"sku": 5}]), "events.purchase", "wrong_type"),
        (event("purchase", items=[{"qty": True}]), "events.purchase", "wrong_type"),
        (event("purchase", items=[{"qty": 1.5}]), "events.purchase", "wrong_type"),
        (event("purchase", items=[{"qty": "2"}]), "events.purchase", "wrong_type"),
        (event("purchase", items=[{"price": False}]), "events.purchase", "wrong_type"),
        (event("browse", price=True), "events.browse", "wrong_type"),
        (event("browse", price="80"), "events.browse", "wrong_type"),
        (event("browse", category=["running"]), "events.browse", "wrong_type"),
        (event("feedback", text={"body": "x"}), "events.feedback", "wrong_type"),
        (event("profile", attributes=[["age", 3]]), "events.profile", "wrong_type"),
        (event("profile", attributes={"address": {"city": "Chengdu"}}), "events.profile", "wrong_type"),
        (event("refund", amount=None), "events.purchase", "missing_field"),
        (event("refund", amount=[10]), "events.purchase", "wrong_type"),
        # numbers: finite and bounded, so that no sum can become infinite or overflow encoding
        (event("purchase", amount=1e308), "events.purchase", "bad_value"),
        (event("purchase", amount=1_000_000_000.01), "events.purchase", "bad_value"),
        (event("purchase", amount=2**63), "events.purchase", "bad_value"),
        (event("purchase", amount=2**64 - 1), "events.purchase", "bad_value"),
        (event("refund", amount=-0.0), "events.purchase", "bad_value"),
        (event("browse", price=2**63), "events.browse", "bad_value"),
        (event("browse", price=-0.5), "events.browse", "bad_value"),
        (event("purchase", items=[{"price": 2**63}]), "events.purchase", "bad_value"),
        (event("purchase", items=[{"price": -1}]), "events.purchase", "bad_value"),
        (event("purchase", items=[{"qty": 1_000_001}]), "events.purchase", "bad_value"),
        (event("purchase", items=[{"qty": -1}]), "events.purchase", "bad_value"),
        (event("profile", attributes={"age": 2**53}), "events.profile", "bad_value"),
        (event("profile", attributes={"age": -1e300}), "events.profile", "bad_value"),
        (
            b'{"event_id": "e1", "customer_id": "c1", "type": "purchase", "ts": 1, "order_id": "o", "amount": NaN}',
            "events.purchase",
            "not_json",
        ),
        (
            b'{"event_id": "e1", "customer_id": "c1", "type": "purchase", "ts": 1, "order_id": "o", "amount": Infinity}',
            "events.purchase",
            "not_json",
        ),
        (
            b'{"event_id": "e1", "customer_id": "c1", "type": "purchase", "ts": 1, "order_id": "o", "amount": 1e400}',
            "events.purchase",
            "not_json",
        ),
        # sizes: every list, object and string that ends up in state is bounded
        (event("purchase", items=[{}] * 1001), "events.purchase", "bad_value"),
        (event("profile", attributes={f"a{i}": i for i in range(101)}), "events.profile", "bad_value"),
        (event("profile", attributes={"": "x"}), "events.profile", "bad_value"),
        (event("profile", attributes={"n" * 65: "x"}), "events.profile", "bad_value"),
        (event("profile", attributes={"city": "x" * 257}), "events.profile", "bad_value"),
        (event("browse", category="x" * 1025), "events.browse", "bad_value"),
        (event("browse", query="q" * 1025), "events.browse", "bad_value"),
        (event("purchase", items=[{"sku": "s" * 1025}]), "events.purchase", "bad_value"),
        (event("purchase", source="w" * 1025), "events.purchase", "bad_value"),
        (event("feedback", topic="t" * 1025), "events.feedback", "bad_value"),
        (event("purchase", currency="ÄÖÜ"), "events.purchase", "bad_value"),
        # nesting: over 32 levels is refused here, over 1024 already by the JSON parser
        (event("purchase", context=nested(33)), "events.purchase", "bad_value"),
        (
            b'{"event_id": "e1", "customer_id": "c1", "context": ' + b"[" * 1100 + b"]" * 1100 + b"}",
            "events.purchase",
            "not_json",
        ),
        (b"[" * 2000 + b"]" * 2000, "events.purchase", "not_json"),
        (event("purchase", ts="0001-01-01T00:00:00+14:00"), "events.purchase", "bad_ts"),
        (event("purchase", ts="1969-12-31T23:59:59Z"), "events.purchase", "bad_ts"),
    ],
)
def test_each_reject_code(value: bytes | dict[str, object], topic: str, code: str) -> None:
    result = check(value, topic)
    assert isinstance(result, Rejected), result
    assert result.code == code, result.message
    assert result.code in REJECT_CODES


@pytest.mark.parametrize(
    ("value", "topic"),
    [
        (event("purchase", amount=1_000_000_000), "events.purchase"),
        (event("purchase", amount=-0.0), "events.purchase"),
        (event("refund", amount=1e9), "events.purchase"),
        (event("browse", price=1e9), "events.browse"),
        (
            event(
                "purchase",
                items=[{"sku": "s" * 1024, "category": "c" * 1024}]
                + [{"qty": 1_000_000, "price": 1_000_000_000}] * 999,
            ),
            "events.purchase",
        ),
        (event("profile", attributes={f"a{i}": i for i in range(100)}), "events.profile"),
        (
            event("profile", attributes={"n" * 64: "x" * 256, "big": 2**53 - 1, "small": -(2**53 - 1), "f": 0.5}),
            "events.profile",
        ),
        (event("browse", category="x" * 1024, page="p" * 1024), "events.browse"),
        (event("feedback", kind="review", score=5, text="t" * 6000), "events.feedback"),
        (event("purchase", context=nested(32)), "events.purchase"),
        (event("purchase", extra={"any": ["thing", 1, None]}, more=[1e308]), "events.purchase"),
        (event("purchase", event_id="{e}}1{", customer_id="c1"), "events.purchase"),
        (event("purchase", ts="1970-01-01T00:00:00Z"), "events.purchase"),
    ],
)
def test_values_at_the_bounds_are_accepted(value: dict[str, object], topic: str) -> None:
    result = validate(topic, 2, 7, b"c1", orjson.dumps(value), now_ms=NOW, max_bytes=1 << 20)
    assert isinstance(result, Event), result


@pytest.mark.parametrize("customer_id", ["{c1}", "}{", "{", "客户-{42}", "émoji-😀", "a b\tc", "x" * 128, "{" * 128])
def test_any_unicode_id_is_accepted_braces_included(customer_id: str) -> None:
    result = check(
        event("purchase", customer_id=customer_id, event_id=customer_id + "!"[: 128 - len(customer_id)]),
        key=customer_id.encode(),
    )
    assert isinstance(result, Event), result
    assert result.customer_id == customer_id


def test_key_must_be_the_customer_id() -> None:
    result = check(event("purchase"), key=b"someone-else")
    assert isinstance(result, Rejected) and result.code == "key_mismatch"
    assert "not the customer_id" in result.message


def test_a_record_without_a_key_is_rejected() -> None:
    """Keyless, it may sit on any partition: two workers could own the same customer."""
    result = check(event("purchase"), key=None)
    assert isinstance(result, Rejected) and result.code == "key_mismatch"
    assert "no key" in result.message


def test_nothing_unexpected_escapes_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in a check becomes processing_error (the type only in the message), never an exception."""

    def broken(body: dict[str, object]) -> None:
        raise RuntimeError(f"boom on {body['customer_id']}")

    monkeypatch.setitem(_TYPE_CHECKS, "purchase", broken)
    result = check(event("purchase"))
    assert isinstance(result, Rejected) and result.code == "processing_error"
    assert result.message == "validation failed: RuntimeError"
    assert (result.source.offset, result.key) == (7, b"c1")


def test_messages_name_the_field_not_the_value() -> None:
    result = check(
        event("purchase", customer_id="secret-person@example.com", amount=-1), key=b"secret-person@example.com"
    )
    assert isinstance(result, Rejected) and "amount" in result.message and "secret" not in result.message


@pytest.mark.parametrize(
    ("value", "topic", "field", "limit"),
    [
        (event("purchase", amount=1e308), "events.purchase", "'amount'", "1,000,000,000"),
        (event("purchase", items=[{"qty": 10**7}]), "events.purchase", "'items[].qty'", "1,000,000"),
        (event("purchase", items=[{}] * 1001), "events.purchase", "'items'", "1,000"),
        (
            event("profile", attributes={f"a{i}": f"secret{i}" for i in range(101)}),
            "events.profile",
            "'attributes'",
            "100",
        ),
        (event("profile", attributes={"n" * 65: "secret"}), "events.profile", "names", "64"),
        (event("profile", attributes={"city": "secret" * 50}), "events.profile", "string values", "256"),
        (event("browse", query="secret" * 200), "events.browse", "'query'", "1,024"),
        (event("purchase", context=nested(40)), "events.purchase", "nested", "32"),
    ],
)
def test_a_bound_message_names_the_limit_never_the_value(
    value: dict[str, object], topic: str, field: str, limit: str
) -> None:
    result = check(value, topic)
    assert isinstance(result, Rejected) and result.code == "bad_value", result
    assert field in result.message and limit in result.message and "secret" not in result.message


@pytest.mark.parametrize("raw", [b'{"broken": ', b"\xff\xfe\x00\x01binary"])
def test_dlq_records_keep_the_original_bytes(raw: bytes) -> None:
    rejected = check(raw, key=b"\xffkey")
    assert isinstance(rejected, Rejected)
    key, value = dlq_record(rejected, NOW)
    record = orjson.loads(value)
    assert key == b"\xffkey" and base64.b64decode(record["key"]) == b"\xffkey"
    assert original_value(record) == raw
    assert (record["topic"], record["partition"], record["offset"]) == ("events.purchase", 2, 7)
    assert record["error"]["code"] == rejected.code and record["received_at"].endswith("Z")


# -- the published JSON Schemas say the same as the validator ---------------------------

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jsonschema import Draft202012Validator  # noqa: E402

SCHEMAS = Path(__file__).resolve().parents[2] / "topics" / "schemas"


def schema(name: str) -> Draft202012Validator:
    doc = orjson.loads((SCHEMAS / name).read_bytes())
    Draft202012Validator.check_schema(doc)
    return Draft202012Validator(doc, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_every_declared_topic_has_a_valid_schema() -> None:
    from segengine.topics import load_topics

    for topic in load_topics():
        schema(Path(topic.value_schema).name)


ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
valid_events = st.one_of(
    st.builds(lambda i, c, a, p: ("events.browse", {"event_id": i, "customer_id": c, "type": "browse", "ts": NOW - 5, "action": a, "price": p}),
              ids, ids, st.sampled_from(["view", "search", "add_to_cart", "remove_from_cart", "checkout_start", "wishlist"]), st.floats(0, 1e6)),
    st.builds(lambda i, c, amt, t: ("events.purchase", {"event_id": i, "customer_id": c, "type": t, "ts": "2024-01-01T10:00:00+08:00", "order_id": i, "amount": amt}),
              ids, ids, st.floats(0.01, 1e6), st.sampled_from(["purchase", "refund"])),
    st.builds(lambda i, c, s: ("events.feedback", {"event_id": i, "customer_id": c, "type": "feedback", "ts": NOW - 5, "kind": "nps", "score": s}),
              ids, ids, st.integers(0, 10)),
    st.builds(lambda i, c, attrs: ("events.profile", {"event_id": i, "customer_id": c, "type": "profile", "ts": NOW - 5, "attributes": attrs}),
              ids, ids, st.dictionaries(ids, st.one_of(st.none(), st.booleans(), st.integers(-(2**53 - 1), 2**53 - 1), ids), max_size=4)),
)  # fmt: skip
BREAK = {
    "events.browse": ("action", "teleport"),
    "events.purchase": ("amount", -3),
    "events.feedback": ("score", 11),
    "events.profile": ("attributes", {"tags": ["a", "b"]}),
}


def keyed(topic: str, ev: dict[str, object]) -> Event | Rejected:
    """``ev`` through the validator as a record keyed by its customer_id."""
    key = ev["customer_id"].encode() if isinstance(ev.get("customer_id"), str) else b"c1"  # type: ignore[union-attr]
    return validate(topic, 0, 0, key, orjson.dumps(ev), now_ms=NOW)


@settings(max_examples=60, deadline=None)
@given(valid_events)
def test_validator_and_schemas_agree(topic_event: tuple[str, dict[str, object]]) -> None:
    topic, ev = topic_event
    validator = schema(f"{topic}.json")
    assert isinstance(keyed(topic, ev), Event)
    assert validator.is_valid(ev), list(validator.iter_errors(ev))
    field, bad = BREAK[topic]
    broken = {**ev, field: bad}
    assert isinstance(keyed(topic, broken), Rejected)
    assert not validator.is_valid(broken)
    for name in ("customer_id", "event_id"):
        empty = {**ev, name: ""}
        assert isinstance(keyed(topic, empty), Rejected) and not validator.is_valid(empty)


def _items(**item: object) -> dict[str, object]:
    return {"items": [item]}


# (what, event type, the event with the value in place, the largest (or smallest) accepted value, the first refused one).
# Not here: nesting depth (at most 32 levels), which JSON Schema cannot state (the schemas say it in words).
BOUNDS: list[tuple[str, str, Callable[[Any], dict[str, object]], object, object]] = [
    ("amount", "purchase", lambda v: event("purchase", amount=v), 1_000_000_000, 1_000_000_000.5),
    ("amount huge", "purchase", lambda v: event("purchase", amount=v), 1e9, 1e308),
    ("amount 2**63", "purchase", lambda v: event("purchase", amount=v), 0, 2**63),
    ("refund amount", "refund", lambda v: event("refund", amount=v), 1e9, 2**64 - 1),
    ("amount bool", "purchase", lambda v: event("purchase", amount=v), 1, True),
    ("browse price", "browse", lambda v: event("browse", price=v), 1e9, 2**63),
    ("browse price low", "browse", lambda v: event("browse", price=v), 0, -0.01),
    ("items[].price", "purchase", lambda v: event("purchase", **_items(price=v)), 1e9, 1e9 + 1),
    ("items[].qty", "purchase", lambda v: event("purchase", **_items(qty=v)), 1_000_000, 1_000_001),
    ("items[].qty low", "purchase", lambda v: event("purchase", **_items(qty=v)), 0, -1),
    ("items count", "purchase", lambda n: event("purchase", items=[{"qty": 1}] * n), 1000, 1001),
    ("items[].sku", "purchase", lambda n: event("purchase", **_items(sku="s" * n)), 1024, 1025),
    ("items[].category", "purchase", lambda n: event("purchase", **_items(category="c" * n)), 1024, 1025),
    ("channel", "purchase", lambda n: event("purchase", channel="c" * n), 1024, 1025),
    ("source", "purchase", lambda n: event("purchase", source="s" * n), 1024, 1025),
    ("order_id", "purchase", lambda n: event("purchase", order_id="o" * n), 128, 129),
    ("event_id", "browse", lambda n: event("browse", event_id="e" * n), 128, 129),
    ("page", "browse", lambda n: event("browse", page="p" * n), 1024, 1025),
    ("product_id", "browse", lambda n: event("browse", product_id="p" * n), 1024, 1025),
    ("category", "browse", lambda n: event("browse", category="c" * n), 1024, 1025),
    ("session_id", "browse", lambda n: event("browse", session_id="s" * n), 1024, 1025),
    ("query", "browse", lambda n: event("browse", query="q" * n), 1024, 1025),
    ("feedback topic", "feedback", lambda n: event("feedback", topic="t" * n), 1024, 1025),
    ("nps score", "feedback", lambda v: event("feedback", kind="nps", score=v), 10, 11),
    ("csat score", "feedback", lambda v: event("feedback", kind="csat", score=v), 1, 0),
    ("review score", "feedback", lambda v: event("feedback", kind="review", score=v), 5, 6),
    ("attributes count", "profile", lambda n: event("profile", attributes={f"a{i}": i for i in range(n)}), 100, 101),
    ("attribute name", "profile", lambda n: event("profile", attributes={"n" * n: "x"}), 64, 65),
    ("attribute name empty", "profile", lambda n: event("profile", attributes={"n" * n: "x"}), 1, 0),
    ("attribute string", "profile", lambda n: event("profile", attributes={"city": "x" * n}), 256, 257),
    ("attribute number", "profile", lambda v: event("profile", attributes={"n": v}), 2**53 - 1, 2**53),
    ("attribute number low", "profile", lambda v: event("profile", attributes={"n": v}), -(2**53 - 1), -1e300),
]


@pytest.mark.parametrize(("what", "type_", "make", "at", "over"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_each_bound_is_the_same_in_the_validator_and_the_schema(
    what: str, type_: str, make: Callable[[Any], dict[str, object]], at: object, over: object
) -> None:
    topic = TOPIC[type_]
    validator = schema(f"{topic}.json")
    inside, outside = make(at), make(over)
    assert isinstance(keyed(topic, inside), Event), keyed(topic, inside)
    assert validator.is_valid(inside), list(validator.iter_errors(inside))
    refused = keyed(topic, outside)
    assert isinstance(refused, Rejected) and refused.code in ("bad_value", "wrong_type", "empty_id"), refused
    assert not validator.is_valid(outside)


def test_profile_bounds_are_the_per_customer_bounds() -> None:
    """One event can never be refused by the state for what the validator let through alone."""
    from segengine import state
    from segengine import validate as v

    assert (v.MAX_ATTRIBUTE_NAME, v.MAX_ATTRIBUTE_STRING) == (state.MAX_ATTRIBUTE_NAME, state.MAX_ATTRIBUTE_CHARS)
    assert v.MAX_ATTRIBUTES <= state.MAX_ATTRIBUTES


def test_the_dlq_schema_lists_every_reject_code() -> None:
    doc = orjson.loads((SCHEMAS / "events.dlq.json").read_bytes())
    assert doc["properties"]["error"]["properties"]["code"]["enum"] == list(REJECT_CODES)


def test_dlq_and_output_records_follow_their_schemas() -> None:
    from segengine.evaluate import CHANGES_TOPIC, fold_customer
    from segengine.events import Source
    from segengine.rules import load_rules
    from segengine.state import CustomerState

    rejected = check(b"\xff", key=b"c1")
    assert isinstance(rejected, Rejected)
    assert schema("events.dlq.json").is_valid(orjson.loads(dlq_record(rejected, NOW)[1]))
    rules = load_rules(Path(__file__).resolve().parents[2] / "rules")
    ev = Event("e1", "c1", "purchase", NOW - 1000, {"amount": 300.0, "order_id": "o"}, Source("events.purchase", 0, 3))
    result = fold_customer(rules, CustomerState(), "c1", [ev], now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=1)
    by_topic = {
        "segments.changes": schema("segments.changes.json"),
        "segments.members": schema("segments.members.json"),
    }
    actions = schema("actions.json")
    assert {o.topic for o in result.outputs} >= {
        CHANGES_TOPIC,
        "segments.members",
        "actions.service",
    }  # value tier A: key account manager
    for out in result.outputs:
        validator = actions if out.topic.startswith("actions.") else by_topic[out.topic]
        assert validator.is_valid(out.value), list(validator.iter_errors(out.value))
