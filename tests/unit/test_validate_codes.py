"""Validation, pure: every reject code, and valid events of every type."""

from __future__ import annotations

import base64

import orjson
import pytest

from engine.dlq import dlq_record, original_value
from engine.events import Event, Rejected
from engine.validate import validate

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


def check(value: bytes | dict[str, object], topic: str = "events.purchase", key: bytes | None = b"c1") -> Event | Rejected:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return validate(topic, 2, 7, key, raw, now_ms=NOW, max_bytes=4096)


@pytest.mark.parametrize("type_", sorted(VALID))
def test_valid_events_of_every_type_are_accepted(type_: str) -> None:
    result = check(event(type_), TOPIC[type_])
    assert isinstance(result, Event), result
    assert (result.customer_id, result.type, result.ts, result.source.offset) == ("c1", type_, NOW - 1000, 7)


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [("2024-03-01T08:00:00+08:00", 1709251200000), ("2024-03-01T00:00:00Z", 1709251200000), ("2024-03-01T00:00:00.250Z", 1709251200250), (1709251200000, 1709251200000)],
)
def test_timestamps_rfc3339_with_offset_or_epoch_ms(ts: object, expected_ms: int) -> None:
    result = check(event("purchase", ts=ts))
    assert isinstance(result, Event) and result.ts == expected_ms


@pytest.mark.parametrize(
    ("value", "topic", "code"),
    [
        (b'{"x": "' + b"y" * 5000 + b'"}', "events.purchase", "too_large"),
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
    ],
)
def test_each_reject_code(value: bytes | dict[str, object], topic: str, code: str) -> None:
    result = check(value, topic, key=None)
    assert isinstance(result, Rejected), result
    assert result.code == code, result.message


def test_key_must_be_the_customer_id() -> None:
    result = check(event("purchase"), key=b"someone-else")
    assert isinstance(result, Rejected) and result.code == "key_mismatch"
    assert isinstance(check(event("purchase"), key=None), Event)


def test_messages_name_the_field_not_the_value() -> None:
    result = check(event("purchase", customer_id="secret-person@example.com", amount=-1), key=None)
    assert isinstance(result, Rejected) and "amount" in result.message and "secret" not in result.message


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

from pathlib import Path  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jsonschema import Draft202012Validator  # noqa: E402

SCHEMAS = Path(__file__).resolve().parents[2] / "topics" / "schemas"


def schema(name: str) -> Draft202012Validator:
    doc = orjson.loads((SCHEMAS / name).read_bytes())
    Draft202012Validator.check_schema(doc)
    return Draft202012Validator(doc, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_every_declared_topic_has_a_valid_schema() -> None:
    from engine.topics import load_topics

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
              ids, ids, st.dictionaries(ids, st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), ids), max_size=4)),
)  # fmt: skip
BREAK = {
    "events.browse": ("action", "teleport"),
    "events.purchase": ("amount", -3),
    "events.feedback": ("score", 11),
    "events.profile": ("attributes", {"tags": ["a", "b"]}),
}


@settings(max_examples=60, deadline=None)
@given(valid_events)
def test_validator_and_schemas_agree(topic_event: tuple[str, dict[str, object]]) -> None:
    topic, ev = topic_event
    validator = schema(f"{topic}.json")
    assert isinstance(validate(topic, 0, 0, None, orjson.dumps(ev), now_ms=NOW), Event)
    assert validator.is_valid(ev), list(validator.iter_errors(ev))
    field, bad = BREAK[topic]
    broken = {**ev, field: bad}
    assert isinstance(validate(topic, 0, 0, None, orjson.dumps(broken), now_ms=NOW), Rejected)
    assert not validator.is_valid(broken)
    for name in ("customer_id", "event_id"):
        empty = {**ev, name: ""}
        assert isinstance(validate(topic, 0, 0, None, orjson.dumps(empty), now_ms=NOW), Rejected) and not validator.is_valid(empty)


def test_dlq_and_output_records_follow_their_schemas() -> None:
    from engine.evaluate import CHANGES_TOPIC, fold_customer
    from engine.events import Source
    from engine.rules import load_rules
    from engine.state import CustomerState

    rejected = check(b"\xff", key=b"c1")
    assert isinstance(rejected, Rejected)
    assert schema("events.dlq.json").is_valid(orjson.loads(dlq_record(rejected, NOW)[1]))
    rules = load_rules(Path(__file__).resolve().parents[2] / "rules")
    ev = Event("e1", "c1", "purchase", NOW - 1000, {"amount": 300.0, "order_id": "o"}, Source("events.purchase", 0, 3))
    result = fold_customer(rules, CustomerState(), "c1", [ev], now_for=lambda ts: ts, committed={}, dedupe_horizon_ms=1)
    by_topic = {"segments.changes": schema("segments.changes.json"), "segments.members": schema("segments.members.json")}
    actions = schema("actions.json")
    assert {o.topic for o in result.outputs} >= {CHANGES_TOPIC, "segments.members", "actions.service"}  # value tier A: key account manager
    for out in result.outputs:
        validator = actions if out.topic.startswith("actions.") else by_topic[out.topic]
        assert validator.is_valid(out.value), list(validator.iter_errors(out.value))
