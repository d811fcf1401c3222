"""One hot customer: the per-event fold cost after 10,000 and 50,000 events of one customer.

Pure, no broker and no Redis: the customer's events (browses with a new category each
time, purchases, profile updates; every event_id distinct, one event a minute) are folded
with the shipped rules in batches of ``BATCH``, the state decoded before and encoded after
every batch as the pipeline does. The figure at N is the mean cost per event over the
``MEASURE`` events that follow the first N (process time, so other load on the machine
counts less). With per-customer cost bounded, the two figures are about the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segengine.evaluate import fold_customer
from segengine.events import Event, Source
from segengine.records import TopicPartition
from segengine.rules import load_rules
from segengine.state import CustomerState

BATCH = 100
MEASURE = 1_000
CHECKPOINTS = (10_000, 50_000)
T0 = 1_700_000_000_000
STEP_MS = 60_000
DEDUPE_HORIZON_MS = 7 * 86_400_000
TOPICS = {"browse": "events.browse", "purchase": "events.purchase", "profile": "events.profile"}
ROOT = Path(__file__).resolve().parent.parent


def hot_events(customer_id: str = "hot") -> Iterator[Event]:
    """An endless stream of one customer's events, in time order, every event_id distinct."""
    offsets = dict.fromkeys(TOPICS.values(), 0)
    i = 0
    while True:
        ts = T0 + i * STEP_MS
        body: dict[str, Any]
        if i % 50 == 49:
            type_, body = (
                "profile",
                {"attributes": {"city": f"city-{i % 7}", "age": 20 + i % 50, "last_campaign": f"c{i}"}},
            )
        elif i % 5 == 4:
            type_, body = "purchase", {"order_id": f"o{i}", "amount": 10.0 + i % 90,
                                       "items": [{"sku": f"s{i}", "category": f"cat-{i}", "qty": 1, "price": 10.0}]}  # fmt: skip
        else:
            type_, body = "browse", {"action": "view", "category": f"cat-{i}", "product_id": f"p{i}"}
        topic = TOPICS[type_]
        yield Event(f"hot-{i}", customer_id, type_, ts, body, Source(topic, 0, offsets[topic]))
        offsets[topic] += 1
        i += 1


def hot_customer(checkpoints: tuple[int, ...] = CHECKPOINTS, rules_dir: Path = ROOT / "rules") -> dict[str, Any]:
    """``hot_customer_us_per_event_<N>k`` for every checkpoint N, and the state size there."""
    rules = load_rules(rules_dir)
    events = hot_events()
    blob, outbox = b"", b""
    committed: dict[TopicPartition, int] = {}
    folded = 0
    out: dict[str, Any] = {}
    for checkpoint in sorted(checkpoints):
        while folded < checkpoint:
            blob, outbox = _batch(
                rules, blob, outbox, [next(events) for _ in range(min(BATCH, checkpoint - folded))], committed
            )
            folded += min(BATCH, checkpoint - folded)
        started = time.process_time()
        for _ in range(MEASURE // BATCH):
            blob, outbox = _batch(rules, blob, outbox, [next(events) for _ in range(BATCH)], committed)
        elapsed = time.process_time() - started
        folded += MEASURE
        label = f"{checkpoint // 1000}k"
        out[f"hot_customer_us_per_event_{label}"] = round(elapsed / MEASURE * 1e6, 1)
        out[f"hot_customer_state_bytes_{label}"] = len(blob)
    return out


def _batch(
    rules: Any, blob: bytes, outbox: bytes, batch: list[Event], committed: dict[TopicPartition, int]
) -> tuple[bytes, bytes]:
    """One batch as the pipeline folds it: decode, fold, encode; then the batch is committed."""
    state = CustomerState.loads(blob, outbox)
    fold_customer(
        rules, state, "hot", batch, now_for=lambda ts: ts, committed=committed, dedupe_horizon_ms=DEDUPE_HORIZON_MS
    )
    for event in batch:
        committed[TopicPartition(event.source.topic, event.source.partition)] = event.source.offset + 1
    return state.dumps(), state.dumps_outbox()


if __name__ == "__main__":
    import sys

    for key, value in hot_customer(tuple(int(a) for a in sys.argv[1:]) or CHECKPOINTS).items():
        print(key, value)
