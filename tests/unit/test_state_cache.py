"""The worker's state cache (segengine.statecache): a cached state is always the stored row
decoded, a run with the cache publishes and stores exactly what a run without it does, and
anything another writer did to a customer (the same version with other bytes among it) is
read from the store, not from the cache. ``BatchProcessor`` on a ``MemoryStore``."""

from __future__ import annotations

import itertools
import random
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from segengine.codec import FIELDS
from segengine.metrics import Metrics
from segengine.pipeline import BatchProcessor
from segengine.settings import Settings
from segengine.state import CustomerState
from segengine.statecache import StateCache
from segengine.store import Loaded, Published, Write
from segengine.store_memory import MemoryStore, _Hash
from segengine.writes import loaded_state
from tests.unit.test_batch_memory import (
    DAY,
    NOW,
    RULES,
    Feed,
    FixedClock,
    ListSink,
    browse,
    erase,
    feedback,
    purchase,
)

SETTINGS = Settings(dedupe_horizon_days=7, future_skew_s=300, max_event_bytes=1 << 20)


def typed(value: Any) -> Any:
    """``value`` with the type of every part spelled out: a tuple is not a list, 1 is not 1.0."""
    if isinstance(value, dict):
        return ("dict", sorted(((repr(k), typed(v)) for k, v in value.items()), key=repr))
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(v) for v in value])
    return (type(value).__name__, value)


def fields(state: CustomerState) -> dict[str, Any]:
    return {name: typed(getattr(state, name)) for name in FIELDS}


def signatures() -> Callable[[int], str]:
    """``secrets.token_hex`` counting from 0."""
    names = itertools.count()
    return lambda n: f"{next(names):0{2 * n}x}"


def processor_for(store: MemoryStore, cached: int) -> BatchProcessor:
    settings = SETTINGS.model_copy(update={"state_cache_customers": cached})
    return BatchProcessor(settings, RULES, store, ListSink(), FixedClock(), Metrics(process=False))


def workload(seed: int, customers: int = 40, events: int = 1_200) -> Feed:
    """Every kind of event, erases among them, over a few weeks before NOW."""
    rng = random.Random(seed)
    feed = Feed()
    for n in range(events):
        cid = f"c{rng.randrange(customers)}"
        ts = NOW - 30 * DAY + n * (25 * DAY // events)
        kind = rng.random()
        if kind < 0.35:
            feed.add(purchase(f"e{n}", cid, ts, round(rng.uniform(5, 400), 2)), partition=rng.randrange(2))
        elif kind < 0.8:
            feed.add(
                browse(f"e{n}", cid, ts, rng.choice(["view", "add_to_cart", "search"])), partition=rng.randrange(2)
            )
        elif kind < 0.97:
            feed.add(feedback(f"e{n}", cid, ts, "nps", rng.randrange(11)))
        else:
            feed.add(erase(f"e{n}", cid, ts))
    return feed


async def run(store: MemoryStore, processor: BatchProcessor, feed: Feed, seed: int, check: bool) -> None:
    """Batches of the feed with what a worker meets between them: a publish that fails (the
    outbox then goes out again, signed anew), a batch delivered twice, a write that loses its
    compare-and-set, commits, due timers; with ``check``, the cache's invariant after each step."""
    rng = random.Random(seed)
    records = feed.records
    sink = processor.sink
    assert isinstance(sink, ListSink)
    step = 0
    while step < len(records):
        size = rng.randrange(1, 120)
        batch = records[step : step + size]
        if rng.random() < 0.1:  # another writer gets to some customers first
            for rec in rng.sample(batch, min(3, len(batch))):
                store.lose_next(rec.key.decode() if rec.key else "", 1)
        sink.fail = 1 if rng.random() < 0.1 else 0
        try:
            stats = await processor.process(batch)
        except ConnectionError:
            stats = None  # not published: delivered again below, as after a restart
        if stats is not None and rng.random() < 0.85:
            processor.committed.update(stats.next_offsets)
            await processor.outbox_published(stats.outboxes)
            step += size
        sink.fail = 0
        if rng.random() < 0.3:
            for partition in (0, 1):
                prepared = await processor.fire_timers(await store.due(partition, NOW, 500), partition)
                await processor.publish(prepared)
                await processor.outbox_published(prepared.stats.outboxes)
        if check:
            await assert_cache_is_the_store(store, processor.cache)


async def assert_cache_is_the_store(store: MemoryStore, cache: StateCache) -> None:
    for cid in list(store.hashes):
        held = cache.peek(cid)
        if held is None:
            continue
        row, state = held
        stored = await store.load_state(cid)
        assert row == stored, cid
        assert fields(state) == fields(loaded_state(stored)), cid


async def test_a_cached_state_is_always_its_stored_row_decoded() -> None:
    for seed in range(4):
        store = MemoryStore()
        processor = processor_for(store, 10_000)
        await run(store, processor, workload(seed), seed, check=True)
        assert processor.cache.hits > 300  # the cache served most folds: the check above had something to check


async def test_with_the_cache_the_same_records_are_published_and_the_same_state_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for seed in range(4):
        runs = []
        for cached in (0, 10_000, 7):  # none; every customer; fewer than the customers (evictions)
            monkeypatch.setattr(secrets, "token_hex", signatures())  # the outboxes' signers, the same in every run
            store = MemoryStore()
            processor = processor_for(store, cached)
            await run(store, processor, workload(seed), seed, check=False)
            sink = processor.sink
            assert isinstance(sink, ListSink)
            runs.append((sink.records, repr(store.snapshot()), processor.cache.hits))
        (none, nothing, zero), (full, stored_full, hits), (few, stored_few, some) = runs
        assert zero == 0 and hits > some > 0
        assert not [r for r in none if r.topic == "events.dlq"]  # nothing dead-lettered: every record compared
        assert full == none and stored_full == nothing
        assert few == none and stored_few == nothing


async def test_a_customer_another_writer_changed_is_read_from_the_store() -> None:
    """Erased by another worker and made again: the same version, other bytes. The cache must
    not take the old state for it (that would bring the erased customer's data back)."""
    store = MemoryStore()
    processor = processor_for(store, 100)
    feed = Feed()
    for n in range(3):
        feed.add(purchase(f"p{n}", "ann", NOW - 5 * DAY + n, 100.0))
    await processor.process(feed.records)
    assert processor.cache.peek("ann") is not None
    version = store.hashes["ann"].v

    other = MemoryStore()  # what the other writer wrote: one purchase, at the same version
    other_feed = Feed()
    other_feed.add(purchase("x1", "ann", NOW - 2 * DAY, 7.0))
    await processor_for(other, 0).process(other_feed.records)
    store.hashes["ann"] = _Hash(version, other.hashes["ann"].s)

    feed.add(browse("b1", "ann", NOW - DAY))
    await processor.process(feed.records[-1:])
    state = loaded_state(await store.load_state("ann"))
    assert state.orders == 1 and state.spend == 7.0  # the store's customer, not the one cached
    assert processor.cache.misses == 1 and processor.cache.hits == 0


async def test_only_written_states_are_cached() -> None:
    store = MemoryStore()
    processor = processor_for(store, 100)
    feed = Feed()
    feed.add(purchase("p1", "bo", NOW - DAY, 10.0))
    store.lose_next("bo", 1)  # the first write loses its compare-and-set; the retry writes
    await processor.process(feed.records)
    row, _ = processor.cache.peek("bo") or (None, None)
    assert row == await store.load_state("bo")

    feed.add(erase("x1", "bo", NOW - DAY + 1))
    await processor.process(feed.records[-1:])
    assert processor.cache.peek("bo") is None  # erased: never held


def test_the_cache_holds_the_newest_writes_up_to_its_limit() -> None:
    cache = StateCache(3)
    for n in range(5):
        cache.put(f"c{n}", Loaded(1, b"s", None), CustomerState())
    assert [cid for cid in ("c0", "c1", "c2", "c3", "c4") if cache.peek(cid)] == ["c2", "c3", "c4"]
    none = StateCache(0)
    none.put("c0", Loaded(1, b"s", None), CustomerState())
    assert none.take(["c0"]) == ({}, {}) and none.peek("c0") is None


def test_a_published_outbox_is_dropped_only_from_the_write_that_made_it() -> None:
    cache = StateCache(10)
    state = CustomerState()
    state.outbox_writer = "w"
    state.pending = [object()]  # type: ignore[list-item]
    cache.put("a", Loaded(4, b"s", b"box"), state)
    cache.published([Published("a", 3)])  # an older write's outbox: this one's stays
    assert cache.peek("a") == (Loaded(4, b"s", b"box"), state) and state.pending
    cache.published([Published("a", 4)])
    row, held = cache.peek("a") or (None, None)
    assert row == Loaded(4, b"s", None, None) and held is state and not state.pending and state.outbox_writer is None


def test_a_held_state_is_taken_from_its_row_and_leaves_the_cache() -> None:
    cache = StateCache(10)
    state = CustomerState()
    cache.put("a", Loaded(2, b"doc", None), state)
    rows, states = cache.take(["a", "b"])  # taken out while it is folded
    assert rows == {"a": Loaded(2, b"doc", None)} and states["a"] is state and list(states) == ["a"]
    assert cache.peek("a") is None and cache.take(["a"]) == ({}, {})
    cache.refuted(1)  # its write lost: the store held something else
    assert (cache.hits, cache.misses) == (0, 1)


async def test_a_write_that_names_the_document_it_started_from_lands_only_on_those_bytes() -> None:
    store = MemoryStore()
    assert await store.save([Write("a", 0, b"doc", b"", {})]) == [True]
    assert await store.save([Write("a", 1, b"next", b"", {}, held=b"other")]) == [False]  # the version, not the bytes
    assert await store.save([Write("a", 1, b"next", b"", {}, held=b"doc")]) == [True]
    assert await store.save([Write("b", 0, b"new", b"", {}, held=b"doc")]) == [False]  # nothing stored at all
