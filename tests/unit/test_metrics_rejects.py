"""Rejected records are counted by the type they claim, when that type is readable and one of
the contract's: validation keeps it on the ``Rejected`` value, and a batch counts
``segengine_events_total{outcome="rejected"}`` by topic and type. Anything else (no JSON, no
type, a type outside the contract) stays ``type="unknown"``, so the label stays bounded."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from segengine import validate as validation
from segengine.events import EVENT_TYPES, Event, Rejected
from segengine.pipeline import DLQ_TOPIC
from segengine.store_memory import MemoryStore
from segengine.validate import validate
from tests.unit.test_batch_memory import DAY, NOW, Feed, ListSink, counted, make_processor


def purchase(eid: str, cid: str = "ivy", **fields: Any) -> dict[str, Any]:
    return {"event_id": eid, "customer_id": cid, "type": "purchase", "ts": NOW - DAY, "order_id": eid,
            "amount": 5.0, **fields}  # fmt: skip


def check(topic: str, value: dict[str, Any] | bytes, key: bytes | None = b"ivy") -> Event | Rejected:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return validate(topic, 0, 7, key, raw, now_ms=NOW, max_bytes=1_000)


def test_the_type_labels_are_the_contracts_types() -> None:
    assert {"browse", "purchase", "refund", "feedback", "profile", "erase"} == EVENT_TYPES


@pytest.mark.parametrize(
    ("topic", "value", "key", "code", "type_"),
    [
        ("events.purchase", purchase("a", amount=-3), b"ivy", "bad_value", "purchase"),
        ("events.purchase", {**purchase("a"), "type": "refund", "amount": 0}, b"ivy", "bad_value", "refund"),
        ("events.purchase", purchase("a"), b"jon", "key_mismatch", "purchase"),
        ("events.purchase", purchase("a"), None, "key_mismatch", "purchase"),
        ("events.purchase", {**purchase("a"), "event_id": None}, b"ivy", "missing_field", "purchase"),
        ("events.purchase", {**purchase("a"), "ts": NOW + 365 * DAY}, b"ivy", "future_ts", "purchase"),
        ("events.browse", purchase("a"), b"ivy", "unknown_type", "purchase"),  # a type of the contract, wrong topic
        ("events.profile", {**purchase("a"), "type": "erase", "schema": 2}, b"ivy", "bad_value", "erase"),
        ("events.feedback", {**purchase("a"), "type": "feedback", "kind": "nps"}, b"ivy", "missing_field", "feedback"),
        ("events.browse", {**purchase("a"), "type": "browse", "action": "fly"}, b"ivy", "unknown_action", "browse"),
        ("events.purchase", {**purchase("a"), "type": "gift-card"}, b"ivy", "unknown_type", "unknown"),
        ("events.purchase", {**purchase("a"), "type": ["purchase"]}, b"ivy", "unknown_type", "unknown"),
        ("events.purchase", {**purchase("a"), "type": None}, b"ivy", "missing_field", "unknown"),
        ("events.purchase", b"{not json", b"ivy", "not_json", "unknown"),
        ("events.purchase", b'["purchase"]', b"ivy", "not_object", "unknown"),
        ("events.purchase", b"\xff\xfe", b"ivy", "not_utf8", "unknown"),
        ("events.purchase", purchase("a", note="x" * 2_000), b"ivy", "too_large", "unknown"),
        ("events.purchase", b"", b"ivy", "not_json", "unknown"),
    ],
)
def test_a_rejected_record_keeps_its_type_when_readable(
    topic: str, value: dict[str, Any] | bytes, key: bytes | None, code: str, type_: str
) -> None:
    result = check(topic, value, key)
    assert isinstance(result, Rejected)
    assert (result.code, result.type) == (code, type_)


def test_a_record_whose_validation_raised_keeps_its_type(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(body: dict[str, Any]) -> None:
        raise RuntimeError("a bug in a check")

    monkeypatch.setitem(validation._TYPE_CHECKS, "purchase", broken)
    result = check("events.purchase", purchase("a"))
    assert isinstance(result, Rejected)
    assert (result.code, result.type) == ("processing_error", "purchase")


def test_a_valid_record_is_an_event() -> None:
    assert isinstance(check("events.purchase", purchase("a")), Event)


# -- counted by a batch ---------------------------------------------------------------------------


async def test_a_batch_counts_its_rejects_by_topic_and_type() -> None:
    records = [
        ("events.purchase", purchase("ok-1")),
        ("events.purchase", purchase("neg", amount=-3)),  # bad_value
        ("events.purchase", {**purchase("ref"), "type": "refund", "amount": 0}),  # bad_value
        ("events.purchase", b"{not json"),
        ("events.purchase", {**purchase("gift"), "type": "gift-card"}),  # not a type of the contract
        ("events.browse", purchase("lost")),  # a purchase on the browse topic
        ("events.browse", {**purchase("b1"), "type": "browse", "action": "fly"}),
        ("events.purchase", purchase("ok-2")),
    ]
    feed = Feed()
    for topic, body in records:
        feed.add(body, topic=topic, key=b"ivy")
    sink = ListSink()
    processor = make_processor(MemoryStore(), sink)
    stats = await processor.process(feed.records)

    def events(topic: str, type_: str, outcome: str = "rejected") -> float:
        return counted(processor, "segengine_events_total", topic=topic, type=type_, outcome=outcome)

    assert (stats.applied, stats.rejected) == (2, 6)
    assert len([r for r in sink.records if r.topic == DLQ_TOPIC]) == 6
    assert events("events.purchase", "purchase", "applied") == 2
    assert events("events.purchase", "purchase") == 1
    assert events("events.purchase", "refund") == 1
    assert events("events.purchase", "unknown") == 2  # not JSON; a type outside the contract
    assert events("events.browse", "purchase") == 1
    assert events("events.browse", "browse") == 1
    assert events("events.browse", "unknown") == 0
    assert (
        processor.metrics.registry.get_sample_value(
            "segengine_events_total", {"topic": "events.purchase", "type": "gift-card", "outcome": "rejected"}
        )
        is None
    )
