"""One hot customer: 50,000 events (browses with a new category each, purchases, profile
updates; every event_id distinct, time advancing) folded with the shipped rules, in
batches, decoded and encoded between them as the pipeline does. Its encoded state stays
under the documented limit all along. Outcomes only, never timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segengine.aggregates import MAX_TRACKED
from segengine.evaluate import fold_customer
from segengine.events import Event, Source
from segengine.records import TopicPartition
from segengine.rules import load_rules
from segengine.state import MAX_FINGERPRINTS, MAX_PURCHASE_ENTRIES, MAX_STATE_BYTES, CustomerState, Features

T0 = 1_700_000_000_000
STEP_MS = 10_000  # one event every 10 seconds: 50,000 events in under 6 days, all within the dedupe horizon
EVENTS = 50_000
BATCH = 500
ROOT = Path(__file__).resolve().parents[2]


def hot_event(i: int) -> Event:
    ts = T0 + i * STEP_MS
    body: dict[str, Any]
    if i % 50 == 49:
        type_, topic, body = (
            "profile",
            "events.profile",
            {"attributes": {"city": f"city-{i % 7}", "age": 20 + i % 50, "campaign": f"c{i}"}},
        )
    elif i % 5 == 4:
        type_, topic = "purchase", "events.purchase"
        body = {
            "order_id": f"o{i}",
            "amount": 10.0,
            "items": [{"sku": f"s{i}", "category": f"cat-{i}", "qty": 1, "price": 10.0}],
        }
    else:
        type_, topic, body = (
            "browse",
            "events.browse",
            {"action": "view", "category": f"cat-{i}", "product_id": f"p{i}"},
        )
    return Event(f"hot-{i}", "hot", type_, ts, body, Source(topic, 0, i))


def test_a_hot_customer_state_stays_under_the_size_limit() -> None:
    rules = load_rules(ROOT / "rules")
    blob, outbox = b"", b""
    committed: dict[TopicPartition, int] = {}
    largest = 0
    for start in range(0, EVENTS, BATCH):
        state = CustomerState.loads(blob, outbox)
        batch = [hot_event(i) for i in range(start, start + BATCH)]
        result = fold_customer(
            rules, state, "hot", batch, now_for=lambda ts: ts, committed=committed, dedupe_horizon_ms=7 * 86_400_000
        )
        assert result.applied == BATCH
        for event in batch:
            committed[TopicPartition(event.source.topic, 0)] = event.source.offset + 1
        blob, outbox = state.dumps(), state.dumps_outbox()
        largest = max(largest, len(blob))
        assert len(blob) <= MAX_STATE_BYTES
    assert len(state.seen) <= MAX_FINGERPRINTS
    assert len(state.purchases) <= MAX_PURCHASE_ENTRIES
    assert all(
        sum(len(p) for _, p in buckets) <= MAX_TRACKED for buckets in state.aggs.values() if isinstance(buckets, list)
    )
    features = Features(state, state.max_ts, rules.derived)  # type: ignore[arg-type]
    purchases = sum(1 for i in range(EVENTS) if i % 5 == 4 and i % 50 != 49)
    assert features["orders_total"] == purchases and features["orders_7d"] == purchases  # counts stay exact
    assert largest < MAX_STATE_BYTES // 2
