"""Processing a batch twice equals processing it once (the promise behind at-least-once
delivery, engine.pipeline's docstring): for random small batches of valid events, the
store after two passes (no commit between) is the store after one, byte for byte (the
outboxes' signatures aside). When the first pass's publish failed, the second publishes the
first pass's records again and nothing else; when it was acknowledged, the processor knows
its outboxes published and sends nothing.

Broker-free: ``MemoryStore``, a list sink and a fixed clock (tests.unit.test_batch_memory)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segengine.records import OutRecord
from segengine.store_memory import MemoryStore
from tests.unit.test_batch_memory import (
    DAY,
    NOW,
    Feed,
    ListSink,
    assert_consistent,
    browse,
    change_ids,
    erase,
    feedback,
    make_processor,
    purchase,
)

CUSTOMERS = {"ann": 0, "bob": 1, "cy": 0}  # customer -> its partition (co-partitioned input topics)
SCORES = {"nps": (0, 10), "csat": (1, 5), "review": (1, 5), "complaint": None}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    cid = draw(st.sampled_from(sorted(CUSTOMERS)))
    eid = f"e{draw(st.integers(0, 40))}"  # a small pool: the same event_id comes back now and then
    ts = NOW - draw(st.integers(0, 400)) * DAY - draw(st.integers(0, DAY - 1))
    kind = draw(st.sampled_from(["purchase", "purchase", "browse", "browse", "feedback", "refund", "erase"]))
    if kind == "purchase":
        return purchase(eid, cid, ts, draw(st.integers(0, 60_000)) / 100)
    if kind == "refund":
        body = purchase(eid, cid, ts, draw(st.integers(1, 20_000)) / 100)
        return {**body, "type": "refund"}
    if kind == "browse":
        return browse(eid, cid, ts, draw(st.sampled_from(["view", "search", "add_to_cart", "checkout_start"])))
    if kind == "feedback":
        what = draw(st.sampled_from(sorted(SCORES)))
        bounds = SCORES[what]
        return feedback(eid, cid, ts, what, None if bounds is None else draw(st.integers(*bounds)))
    return erase(eid, cid, ts)


batches = st.lists(events(), min_size=1, max_size=12)


def feed_of(bodies: list[dict[str, Any]]) -> Feed:
    feed = Feed()
    for body in bodies:
        feed.add(body, partition=CUSTOMERS[body["customer_id"]])
    return feed


def unsigned(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A store's snapshot with the outboxes' signatures set aside (each processor has its own)."""
    hashes = snapshot["hashes"]
    for cid, (v, s, p, o, q) in hashes.items():
        hashes[cid] = (v, s, p and orjson.loads(p)["e"], o, q)
    return snapshot


async def once_and_twice(
    bodies: list[dict[str, Any]], crash: bool
) -> tuple[MemoryStore, list[OutRecord], MemoryStore, list[OutRecord], list[OutRecord]]:
    records = feed_of(bodies).records
    once_store, once_sink = MemoryStore(), ListSink()
    await make_processor(once_store, once_sink).process(records)

    store, sink = MemoryStore(), ListSink(fail=1 if crash else 0)
    processor = make_processor(store, sink)
    prepared = await processor.prepare(records)
    try:
        await processor.publish(prepared)
    except ConnectionError:
        assert crash
    first = list(sink.records)
    if crash:
        processor = make_processor(store, sink)  # the worker died: a new one reads the records again
    again = await processor.process(records)  # delivered again, nothing committed
    assert (again.applied, again.duplicates, again.changes, again.rejected) == (0, 0, 0, 0), again
    assert again.redelivered == len(records) and again.outboxes == []
    return once_store, once_sink.records, store, first, sink.records[len(first) :]


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=batches, crash=st.booleans())
def test_processing_a_batch_twice_equals_processing_it_once(bodies: list[dict[str, Any]], crash: bool) -> None:
    once_store, once, store, first, second = asyncio.run(once_and_twice(bodies, crash))
    # states, outboxes, population, timers, recent changes
    assert unsigned(store.snapshot()) == unsigned(once_store.snapshot())
    assert first == ([] if crash else once)  # the same decisions, to the byte (a fixed clock)
    # after the failed publish, every record again, from the outboxes: nothing lost; after the
    # acknowledged one, nothing (the processor knows its own outboxes published)
    assert Counter(second) == (Counter(once) if crash else Counter())
    assert set(change_ids(second)) <= set(change_ids(once))  # and no new change_id
    asyncio.run(assert_consistent(store, [*first, *second]))
