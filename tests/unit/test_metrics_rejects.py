"""Rejected records are counted by the type they claim, when that type is readable and one of
the contract's: validation keeps it on the ``Rejected`` value, and a batch counts
``segengine_events_total{outcome="rejected"}`` by topic and type. Anything else (no JSON, no
type, a type outside the contract) stays ``type="unknown"``, so the label stays bounded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from segengine import validate as validation
from segengine.events import EVENT_TYPES, Event, Rejected
from segengine.metrics import Metrics
from segengine.pipeline import DLQ_TOPIC, BatchProcessor
from segengine.records import OutRecord
from segengine.rules import load_rules
from segengine.settings import Settings
from segengine.store_memory import MemoryStore
from segengine.validate import validate

REPO = Path(__file__).resolve().parents[2]
NOW = 1_717_200_000_000  # 2024-06-01T00:00:00Z
DAY = 86_400_000


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


@dataclass(slots=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = NOW


class FixedClock:
    def now_for(self, event_ts: int) -> int:
        return NOW

    def now(self) -> int:
        return NOW

    def observe(self, topic: str, partition: int, event_ts: int) -> None:
        return None


class ListSink:
    def __init__(self) -> None:
        self.records: list[OutRecord] = []

    async def publish(self, records: list[OutRecord]) -> None:
        self.records += records


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
    offsets: dict[str, int] = {}
    feed = []
    for topic, body in records:
        offsets[topic] = offsets.get(topic, -1) + 1
        feed.append(Rec(topic, 0, offsets[topic], b"ivy", body if isinstance(body, bytes) else orjson.dumps(body)))
    settings = Settings(dedupe_horizon_days=7, future_skew_s=300, max_event_bytes=1 << 20)
    sink = ListSink()
    metrics = Metrics(process=False)
    processor = BatchProcessor(settings, load_rules(REPO / "rules"), MemoryStore(), sink, FixedClock(), metrics)
    stats = await processor.process(feed)

    def events(topic: str, type_: str, outcome: str = "rejected") -> float:
        labels = {"topic": topic, "type": type_, "outcome": outcome}
        return metrics.registry.get_sample_value("segengine_events_total", labels) or 0.0

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
        metrics.registry.get_sample_value(
            "segengine_events_total", {"topic": "events.purchase", "type": "gift-card", "outcome": "rejected"}
        )
        is None
    )
