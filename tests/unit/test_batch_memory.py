"""The batch logic without a broker or Redis: ``BatchProcessor`` on a ``MemoryStore``, a list
sink and a fixed clock. Compare-and-set retries, the outbox re-sent after a failed publish,
dedupe, redelivery after a commit, an erase, dead letters, quarantine and a timer's
reschedule, each checked on what a consumer of the output topics and a reader of the store
would see. The first tests hold ``MemoryStore`` to the semantics of store_redis's Lua scripts."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from segengine.errors import ConcurrentWriteError, PublishRefused
from segengine.evaluate import CHANGES_TOPIC, MEMBERS_TOPIC
from segengine.metrics import Metrics
from segengine.pipeline import DLQ_TOPIC, MAX_CAS_ROUNDS, BatchProcessor, BatchStats
from segengine.records import OutRecord, TopicPartition
from segengine.rules import RuleSet, load_rules
from segengine.settings import Settings
from segengine.state import CustomerState
from segengine.store import HISTORY, Loaded, Published, Quarantine, TimerEntry, Write
from segengine.store_memory import MemoryStore
from segengine.worker.decisions import Decisions
from segengine.worker.hooks import Hooks
from segengine.worker.order import PublishOrder
from segengine.worker.retry import RetryPolicy

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules(REPO / "rules")  # the shipped packs: every dimension, actions and timers
DAY = 86_400_000
NOW = 1_717_200_000_000  # 2024-06-01T00:00:00Z, fixed; in the past, so no event is "in the future"
# What the pipeline reads of the settings, stated (the environment must not change a test).
SETTINGS = Settings(dedupe_horizon_days=7, future_skew_s=300, max_event_bytes=1 << 20)
TOPICS = {"purchase": "events.purchase", "refund": "events.purchase", "browse": "events.browse",
          "feedback": "events.feedback", "profile": "events.profile", "erase": "events.profile"}  # fmt: skip


# -- the harness --------------------------------------------------------------------------------


@dataclass(slots=True)
class Rec:
    """An input record as the consumer hands it over (engine.records.Record)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = NOW


class FixedClock:
    """Every decision at ``NOW``: runs are reproducible to the byte."""

    def now_for(self, event_ts: int) -> int:
        return NOW

    def now(self) -> int:
        return NOW

    def observe(self, topic: str, partition: int, event_ts: int) -> None:
        return None


class ListSink:
    """Keeps what is published; the first ``fail`` publishes raise (the broker went away
    before acknowledging: nothing of them counts as published)."""

    def __init__(self, fail: int = 0) -> None:
        self.records: list[OutRecord] = []
        self.fail = fail

    async def publish(self, records: list[OutRecord]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the broker went away before the acks")
        self.records += records


class Feed:
    """Records in order, with the next offset per topic-partition."""

    def __init__(self) -> None:
        self.records: list[Rec] = []
        self._next: Counter[tuple[str, int]] = Counter()

    def add(self, body: dict[str, Any] | bytes, *, topic: str | None = None, partition: int = 0, key: Any = ...) -> Rec:
        if isinstance(body, dict):
            topic = topic or TOPICS[str(body["type"])]
            key = str(body["customer_id"]).encode() if key is ... else key
            value = orjson.dumps(body)
        else:
            value = body
        assert topic is not None
        offset = self._next[(topic, partition)]
        self._next[(topic, partition)] += 1
        rec = Rec(topic, partition, offset, None if key is ... else key, value)
        self.records.append(rec)
        return rec


def purchase(eid: str, cid: str, ts: int, amount: float) -> dict[str, Any]:
    return {"event_id": eid, "customer_id": cid, "type": "purchase", "ts": ts, "order_id": f"o-{eid}", "amount": amount}


def browse(eid: str, cid: str, ts: int, action: str = "view") -> dict[str, Any]:
    return {"event_id": eid, "customer_id": cid, "type": "browse", "ts": ts, "action": action}


def feedback(eid: str, cid: str, ts: int, kind: str = "nps", score: int | None = 9) -> dict[str, Any]:
    body = {"event_id": eid, "customer_id": cid, "type": "feedback", "ts": ts, "kind": kind}
    return body if score is None else {**body, "score": score}


def erase(eid: str, cid: str, ts: int) -> dict[str, Any]:
    return {"event_id": eid, "customer_id": cid, "type": "erase", "ts": ts}


def make_processor(store: MemoryStore, sink: ListSink | None = None, rules: RuleSet = RULES) -> BatchProcessor:
    return BatchProcessor(SETTINGS, rules, store, sink or ListSink(), FixedClock(), Metrics(process=False))


async def commit(processor: BatchProcessor, store: MemoryStore, stats: BatchStats) -> None:
    """What the worker does once a batch is published (engine.worker.checkpoint): commit its
    offsets, then drop the outboxes of its writes."""
    processor.committed.update(stats.next_offsets)
    await store.outbox_published(stats.outboxes)


def counted(processor: BatchProcessor, metric: str, **labels: str) -> float:
    return processor.metrics.registry.get_sample_value(metric, labels) or 0.0


def values(records: list[OutRecord], topic: str) -> list[Any]:
    return [None if r.value is None else orjson.loads(r.value) for r in records if r.topic == topic]


def change_ids(records: list[OutRecord]) -> list[str]:
    return [c["change_id"] for c in values(records, CHANGES_TOPIC)]


async def state_of(store: MemoryStore, cid: str) -> CustomerState:
    loaded = (await store.load([cid]))[cid]
    assert loaded.blob is not None, f"no state for {cid}"
    return CustomerState.loads(loaded.blob)


async def assert_consistent(store: MemoryStore, published: list[OutRecord]) -> None:
    """What a reader can check of any store after any run: the population counters are the
    memberships of the stored states (nothing counted twice, nothing lost), and every
    customer's published changes, per dimension, chain from nothing to its membership."""
    members: Counter[tuple[str, str]] = Counter()
    states = {}
    async for chunk in store.scan_customers(count=2):
        for cid in chunk:
            loaded = await store.load_state(cid)
            if loaded.blob is not None:
                states[cid] = CustomerState.loads(loaded.blob)
                members.update(states[cid].members.items())
    population = await store.population()
    assert {(d, s): n for d, segs in population.items() for s, n in segs.items() if n} == dict(members)
    chains: dict[tuple[str, str], str | None] = {}
    seen: set[str] = set()
    for change in values(published, CHANGES_TOPIC):
        if change["change_id"] in seen:
            continue  # a re-send of the same decision (at-least-once)
        seen.add(change["change_id"])
        key = (change["customer_id"], change["dimension"])
        assert chains.get(key) == change["from"], f"{key}: from {change['from']} after {chains.get(key)}"
        chains[key] = change["to"]
    for cid, state in states.items():
        assert {d: s for (c, d), s in chains.items() if c == cid and s is not None} == state.members


# -- MemoryStore keeps store_redis's semantics ----------------------------------------------------


def write(cid: str, version: int, blob: bytes = b"{}", **fields: Any) -> Write:
    return Write(cid, version, blob, fields.pop("outbox", b""), fields.pop("population", {}), **fields)


async def test_save_is_a_compare_and_set_that_moves_everything_with_the_state() -> None:
    store = MemoryStore()
    assert await store.save([write("a", 0, b"s1", outbox=b"[1]", population={("d", "x"): 1}, home=2, next_check=50)])
    assert await store.save([write("a", 0, b"lost", population={("d", "x"): 5})]) == [False]  # stale version
    assert await store.load(["a", "nobody"]) == {"a": Loaded(1, b"s1", b"[1]"), "nobody": Loaded(0, None, None)}
    assert await store.population() == {"d": {"x": 1}} and await store.next_check("a", 2) == 50

    store.bump("a")  # another writer: the version read before is stale
    assert await store.save([write("a", 1, b"s2")]) == [False]
    moves = {("d", "x"): -1, ("d", "y"): 1, ("d", "z"): 0}
    assert await store.save([write("a", 2, b"s2", population=moves, home=2)]) == [True]  # no outbox, no next check
    assert await store.load_state("a") == Loaded(3, b"s2", None)
    assert await store.population() == {"d": {"x": 0, "y": 1}}  # a zero stays; a zero delta writes nothing
    assert await store.next_check("a", 2) is None and await store.due(2, NOW, 10) == []


async def test_recent_changes_are_newest_first_capped_and_forgotten_by_an_erase() -> None:
    store = MemoryStore()
    records = [orjson.dumps({"n": n}) for n in range(HISTORY + 3)]
    assert await store.save([write("a", 0, recent=tuple(records[:3]))])
    assert await store.save([write("a", 1, recent=tuple(records[3:]))])
    assert (await store.lookup("a")).recent == list(reversed(records))[:HISTORY]
    assert await store.save([write("a", 2, recent=(b"after",), forget=True)])
    assert (await store.lookup("a")).recent == [b"after"]


async def test_an_erased_write_keeps_its_offsets_until_its_outbox_is_published() -> None:
    store = MemoryStore()
    assert await store.save([write("a", 0, home=1, next_check=5)])
    assert await store.save([write("a", 1, b"", outbox=b"[exits]", home=1, forget=True, offsets=b'{"t:1":4}')])
    assert await store.load_state("a") == Loaded(2, None, b"[exits]", b'{"t:1":4}')
    assert await store.erasing() == [("a", Loaded(2, None, b"[exits]", b'{"t:1":4}'))]
    assert await store.next_check("a", 1) is None
    await store.outbox_published([Published("a", 1)])  # an older write's: nothing happens
    assert (await store.load_state("a")).version == 2
    await store.outbox_published([Published("a", 2)])
    assert await store.load_state("a") == Loaded(0, None, None) and await store.erasing() == []
    assert [c async for c in store.scan_customers()] == []

    # Erased, then a new customer under the same id before the erase is committed:
    assert await store.save([write("b", 0, b"", outbox=b"[x]", offsets=b"{}")])
    assert await store.erasing() == [("b", Loaded(1, None, b"[x]", b"{}"))]
    assert await store.save([write("b", 1, b"new")])
    assert await store.erasing() == [] and await store.load_state("b") == Loaded(2, b"new", None, None)
    await store.outbox_published([Published("b", 2)])
    assert await store.load_state("b") == Loaded(2, b"new", None)  # a state document: only the outbox would go


async def test_outbox_published_drops_only_the_same_versions_outbox_and_reschedules() -> None:
    store = MemoryStore()
    assert await store.save([write("a", 0, outbox=b"[o1]", home=3, next_check=NOW)])
    assert await store.save([write("a", 1, outbox=b"[o2]", home=3, next_check=NOW)])
    await store.outbox_published([Published("a", 1, 3, NOW + 9, reschedule=True)])  # a newer write came since
    assert (await store.load_state("a")).outbox == b"[o2]" and await store.next_check("a", 3) == NOW
    await store.outbox_published([Published("a", 2, 3, NOW + 9, reschedule=True)])
    assert (await store.load_state("a")).outbox is None and await store.next_check("a", 3) == NOW + 9
    assert await store.save([write("a", 2, outbox=b"[o3]", home=3, next_check=NOW)])
    await store.outbox_published([Published("a", 3, 3, None, reschedule=True)])
    assert await store.next_check("a", 3) is None


async def test_quarantine_marks_the_hash_and_takes_the_timer_off_until_a_write_succeeds() -> None:
    store = MemoryStore()
    assert await store.save([write("a", 0, home=1, next_check=NOW)])
    await store.quarantine([Quarantine("a", "fold", 1), Quarantine("ghost", "timer", 1)])
    assert (await store.lookup("a")).quarantined == b"fold"
    assert await store.timer_backlog([0, 1], NOW) == 0
    assert "ghost" not in store.hashes  # no hash is created for a customer that has none
    assert await store.save([write("a", 1, home=1, next_check=NOW - 1)])
    assert (await store.lookup("a")).quarantined is None and await store.due(1, NOW, 5) == [TimerEntry("a", NOW - 1)]


async def test_due_is_earliest_first_then_by_id_and_bounded() -> None:
    store = MemoryStore()
    for cid, due in (("b", 5), ("a", 5), ("c", 1), ("d", 9)):
        assert await store.save([write(cid, 0, home=0, next_check=due)])
    assert await store.due(0, 5, 10) == [TimerEntry("c", 1), TimerEntry("a", 5), TimerEntry("b", 5)]
    assert await store.due(0, 9, 2) == [TimerEntry("c", 1), TimerEntry("a", 5)]
    assert await store.timer_backlog([0, 7], 5) == 3
    await store.drop_timers(0, ["a", "c", "nobody"])
    assert await store.due(0, 9, 10) == [TimerEntry("b", 5), TimerEntry("d", 9)]


async def test_samples_and_cuts_round_trip() -> None:
    store = MemoryStore()
    assert await store.quantile_samples() is None and await store.rescored_cuts([0, 1]) == {}
    samples = {"spend_total": [1.0, 2.5]}
    await store.save_quantile_samples(NOW, samples)
    await store.save_rescored_cuts([1, 2], {"spend_total": [2.0]})
    samples["spend_total"].append(9.0)  # the store keeps a copy
    assert await store.quantile_samples() == (NOW, {"spend_total": [1.0, 2.5]})
    assert await store.rescored_cuts([0, 1, 2]) == {1: {"spend_total": [2.0]}, 2: {"spend_total": [2.0]}}


# -- compare-and-set -----------------------------------------------------------------------------


class RacingStore(MemoryStore):
    """Runs ``before_save`` once, just before the next save: a writer that gets in between
    a batch's load and its compare-and-set."""

    before_save: Callable[[], Awaitable[None]] | None = None

    async def save(self, writes: list[Write]) -> list[bool]:
        hook, self.before_save = self.before_save, None
        if hook is not None:
            await hook()
        return await super().save(writes)


async def test_a_customer_written_meanwhile_is_refolded_on_what_the_other_writer_wrote() -> None:
    store = RacingStore()
    feed = Feed()
    feed.add(purchase("p1", "ann", NOW - 40 * DAY, 100.0))
    feed.add(purchase("p2", "ann", NOW - 20 * DAY, 200.0))
    feed.add(purchase("p3", "bob", NOW - DAY, 30.0))
    other_feed = Feed()
    other_feed.add(browse("b1", "ann", NOW - 2 * DAY, "add_to_cart"), partition=0)
    sink, other_sink = ListSink(), ListSink()
    processor, other = make_processor(store, sink), make_processor(store, other_sink)

    async def other_writer() -> None:  # another worker applies ann's browse meanwhile
        await other.process(other_feed.records)

    store.before_save = other_writer
    stats = await processor.process(feed.records)

    assert stats.applied == 3 and stats.evaluated == 2
    assert counted(processor, "segengine_cas_conflicts_total") == 1  # ann only: bob had no one in his way
    ann = await state_of(store, "ann")
    assert (ann.orders, ann.spend, ann.browse_total) == (2, 300.0, 1)  # neither side lost, nothing twice
    assert ann.offsets == {TopicPartition("events.purchase", 0): 1, TopicPartition("events.browse", 0): 0}
    assert (await store.load_state("ann")).version == 2
    published = other_sink.records + sink.records  # in the order they were acknowledged
    # The other writer's outbox is not known published to this one (that writer may have died
    # before its publish): this one sends it again first, the very same records, and nothing else twice.
    twice = {c for c, n in Counter(change_ids(published)).items() if n > 1}
    assert twice and twice == set(change_ids(other_sink.records))
    assert sink.records[: len(other_sink.records)] == other_sink.records
    await assert_consistent(store, published)


async def test_lost_races_are_retried_up_to_max_cas_rounds_then_the_batch_fails_whole() -> None:
    feed = Feed()
    feed.add(purchase("p1", "ann", NOW - 3 * DAY, 80.0))
    feed.add(purchase("p2", "bob", NOW - 2 * DAY, 500.0))
    reference = MemoryStore()
    once = await make_processor(reference).process(feed.records)

    store = MemoryStore()
    store.lose_next("ann", MAX_CAS_ROUNDS - 1)  # the last round wins
    processor = make_processor(store)
    stats = await processor.process(feed.records)
    assert counted(processor, "segengine_cas_conflicts_total") == MAX_CAS_ROUNDS - 1
    assert (stats.applied, stats.changes) == (once.applied, once.changes)
    assert (await state_of(store, "ann")).orders == 1
    assert (await store.load_state("ann")).version == MAX_CAS_ROUNDS  # the other writer's bumps, then this write

    store = MemoryStore()
    store.lose_next("ann", MAX_CAS_ROUNDS)
    sink = ListSink()
    processor = make_processor(store, sink)
    with pytest.raises(ConcurrentWriteError):
        await processor.process(feed.records)
    assert sink.records == []  # nothing published: the batch is not done
    assert (await store.load_state("ann")).blob is None  # never written: only the other writer's bumps
    assert (await state_of(store, "bob")).orders == 1  # written, with its outbox

    again = await processor.process(feed.records)  # the retry policy runs the batch again, whole
    assert (again.applied, again.redelivered) == (1, 1)
    assert (await state_of(store, "ann")).orders == 1 and (await state_of(store, "bob")).orders == 1
    assert store.snapshot()["population"] == reference.snapshot()["population"]
    assert sorted(change_ids(sink.records)) == sorted(change_ids(outboxed(reference)))
    await assert_consistent(store, sink.records)


def outboxed(store: MemoryStore) -> list[OutRecord]:
    """The records in the store's outboxes, as a sink would get them (decoded from the stored bytes)."""
    out: list[OutRecord] = []
    for h in store.hashes.values():
        for entry in orjson.loads(h.p)["e"] if h.p else []:
            value = None if entry["v"] is None else orjson.dumps(entry["v"])
            out.append(OutRecord(entry["t"], entry["k"].encode(), value))
    return out


# -- the outbox, dedupe, redelivery -----------------------------------------------------------


async def test_a_failed_publish_is_resent_from_the_outbox_and_nothing_is_applied_twice() -> None:
    feed = Feed()
    feed.add(purchase("p1", "ann", NOW - 30 * DAY, 70.0))
    feed.add(browse("b1", "ann", NOW - DAY))
    feed.add(purchase("p2", "cy", NOW - DAY, 300.0), partition=1)
    store, sink = MemoryStore(), ListSink(fail=1)
    processor = make_processor(store, sink)

    prepared = await processor.prepare(feed.records)
    written = store.snapshot()
    with pytest.raises(ConnectionError):
        await processor.publish(prepared)  # the worker dies here: no commit, no outbox cleanup
    assert sink.records == [] and prepared.records

    processor = make_processor(store, sink)  # restarted
    again = await processor.process(feed.records)  # delivered again
    assert (again.applied, again.redelivered, again.changes) == (0, 3, 0)
    assert store.snapshot() == written  # not one byte written again
    assert Counter(sink.records) == Counter(prepared.records)  # the same records, the same change_ids
    assert change_ids(sink.records) and set(change_ids(sink.records)) == set(change_ids(prepared.records))

    await commit(processor, store, again)
    # The pass that re-sent wrote nothing, so it has no outbox to drop: the committed entries
    # go with the customer's next write, and are never sent again.
    published = len(sink.records)
    next_batch = await processor.process([feed.add(browse("b2", "ann", NOW - DAY, "search"))])
    assert set(change_ids(sink.records[published:])).isdisjoint(change_ids(prepared.records))
    await commit(processor, store, next_batch)
    assert (await store.load_state("ann")).outbox is None
    await assert_consistent(store, sink.records)


async def crashed_before_its_publish(store: MemoryStore, *records: Rec) -> list[OutRecord]:
    """A worker writes a batch and dies before publishing it: what it would have published."""
    return (await make_processor(store).prepare(list(records))).records


async def test_a_timer_that_comes_before_the_redelivery_sends_the_crashed_batch_first() -> None:
    """The restarted worker's due loop reaches a customer before the record that the dead
    worker applied comes again: that record's changes go out first, and are not lost when
    the timer's outbox is dropped (they were in it)."""
    feed = Feed()
    first = feed.add(purchase("p1", "max", NOW - 59 * DAY, 40.0), partition=4)  # at risk past 60 days
    store = MemoryStore()
    lost = await crashed_before_its_publish(store, first)
    assert change_ids(lost)

    sink = ListSink()
    restarted = make_processor(store, sink)
    due = await store.due(4, NOW + 2 * DAY, 100)
    prepared = await restarted.fire_timers(due, 4)
    await restarted.publish(prepared)
    await store.outbox_published(prepared.stats.outboxes)
    assert sink.records[: len(lost)] == lost  # first, as they were decided first
    assert ("active", "at_risk") in [(c["from"], c["to"]) for c in values(sink.records[len(lost) :], CHANGES_TOPIC)]
    again = await restarted.process([first])  # the purchase comes again: applied, published, nothing new
    assert (again.redelivered, again.applied) == (1, 0)
    await assert_consistent(store, sink.records)


async def test_a_record_of_another_topic_first_sends_the_crashed_batch_first() -> None:
    """The restarted worker reads the customer's browse (another topic) before the purchase
    the dead worker applied comes again."""
    feed = Feed()
    bought = feed.add(purchase("p1", "ann", NOW - 3 * DAY, 400.0))
    store = MemoryStore()
    lost = await crashed_before_its_publish(store, bought)

    sink = ListSink()
    restarted = make_processor(store, sink)
    browsed = await restarted.process([feed.add(browse("b1", "ann", NOW - DAY, "add_to_cart"))])
    await commit(restarted, store, browsed)
    assert sink.records[: len(lost)] == lost
    assert (await restarted.process([bought])).redelivered == 1
    assert sorted(change_ids(sink.records)) == sorted(set(change_ids(sink.records)))  # each once
    await assert_consistent(store, sink.records)


async def test_a_write_published_after_an_earlier_publish_failed_keeps_its_outbox() -> None:
    """Batch N is written, then a timer decides one of its customers (its outbox holds N's
    records, which N is to publish), then N's publish fails: the timer's turn is refused (its
    change would overtake N's, and dropping its outbox would lose N's records); the next
    decision sends the whole outbox, in decision order."""
    feed = Feed()
    first = feed.add(purchase("p1", "max", NOW - 59 * DAY, 40.0), partition=4)
    store, sink = MemoryStore(), ListSink(fail=1)
    processor = make_processor(store, sink)
    metrics = processor.metrics
    decisions = Decisions(processor, store, RetryPolicy(attempts=1), metrics, Hooks())

    order = decisions.order
    since = order.epoch()
    batch = await processor.prepare([first])
    batch_turn = order.ticket(since)
    since = order.epoch()
    timer = await processor.fire_timers(await store.due(4, NOW + 2 * DAY, 100), 4)
    timer_turn = order.ticket(since)
    assert change_ids(timer.records)
    with pytest.raises(ConnectionError):
        await decisions.publish_in_turn(batch, batch_turn)
    with pytest.raises(PublishRefused):
        await decisions.publish_in_turn(timer, timer_turn)
    assert sink.records == [] and (await store.load_state("max")).outbox is not None

    later = await processor.process([first])  # the batch again (never committed)
    assert later.redelivered == 1
    assert sink.records == batch.records + timer.records  # all of it, in decision order
    await assert_consistent(store, sink.records)


async def test_a_turn_cancelled_while_waiting_does_not_hold_up_the_turns_written_after_it() -> None:
    order = PublishOrder()
    first, second = order.ticket(), order.ticket()
    waiting = asyncio.create_task(order.turn(second).__aenter__())
    await asyncio.sleep(0)
    waiting.cancel()  # a re-evaluation stopped by a rules switch, say
    with pytest.raises(asyncio.CancelledError):
        await waiting
    async with order.turn(first):
        pass
    third = order.ticket()  # written after: goes ahead
    async with order.turn(third):
        pass
    assert order.failed == [second]


async def test_the_same_event_id_on_another_offset_counts_once() -> None:
    feed = Feed()
    twice = purchase("dup-1", "dee", NOW - DAY, 25.0)
    feed.add(twice)
    feed.add(twice)  # a producer retry: the same event at the next offset
    store, sink = MemoryStore(), ListSink()
    processor = make_processor(store, sink)
    stats = await processor.process(feed.records)
    assert (stats.applied, stats.duplicates) == (1, 1)
    published = len(sink.records)
    await commit(processor, store, stats)

    again = await processor.process([feed.add(twice)])  # and once more, in a later batch
    assert (again.applied, again.duplicates, again.changes) == (0, 1, 0)
    dee = await state_of(store, "dee")
    assert (dee.orders, dee.spend) == (1, 25.0)
    assert dee.offsets == {TopicPartition("events.purchase", 0): 2}  # read past: never read again
    assert len(sink.records) == published
    await assert_consistent(store, sink.records)


async def test_records_delivered_again_after_their_commit_change_and_publish_nothing() -> None:
    feed = Feed()
    feed.add(purchase("p1", "eve", NOW - 10 * DAY, 120.0))
    feed.add(feedback("f1", "eve", NOW - DAY, "nps", 2))
    feed.add(browse("b1", "fay", NOW - DAY, "search"), partition=1)
    store, sink = MemoryStore(), ListSink()
    processor = make_processor(store, sink)
    stats = await processor.process(feed.records)
    await commit(processor, store, stats)
    committed = store.snapshot()
    published = list(sink.records)

    again = await processor.process(feed.records)  # a rebalance hands the same records over again
    assert (again.applied, again.redelivered, again.changes, again.published) == (0, 3, 0, 0)
    assert sink.records == published and store.snapshot() == committed


# -- erase, dead letters, quarantine, timers --------------------------------------------------


async def test_an_erase_exits_every_segment_and_the_customer_goes_once_published() -> None:
    feed = Feed()
    feed.add(purchase("p1", "gil", NOW - 20 * DAY, 120.0))
    feed.add(feedback("f1", "gil", NOW - DAY, "complaint", None))
    feed.add(purchase("p9", "hal", NOW - DAY, 10.0))
    store, sink = MemoryStore(), ListSink()
    processor = make_processor(store, sink)
    await commit(processor, store, await processor.process(feed.records))
    members = (await state_of(store, "gil")).members
    before = await store.population()
    assert members and await store.next_check("gil", 0) is not None

    erasing = Feed()
    erasing.add(erase("x1", "gil", NOW))
    published = len(sink.records)
    stats = await processor.process(erasing.records)
    out = sink.records[published:]
    exits = values(out, CHANGES_TOPIC)
    assert {(c["dimension"], c["from"], c["to"]) for c in exits} == {(d, s, None) for d, s in members.items()}
    assert all(c["cause"]["kind"] == "erase" and c["reason"] == "erase" for c in exits)
    assert [(r.key, r.value) for r in out if r.topic == MEMBERS_TOPIC] == [(b"gil", None)]  # the tombstone
    after = await store.population()
    assert all(after[d][s] == before[d][s] - 1 for d, s in members.items())
    assert (await state_of(store, "hal")).orders == 1  # the other customer stays

    # Written, not yet published: no state, the applied offsets and the outbox, on the erasing list.
    left = await store.load_state("gil")
    assert left.blob is None and left.offsets and left.outbox
    assert [cid for cid, _ in await store.erasing()] == ["gil"]
    assert (await store.lookup("gil")).recent == [] and await store.next_check("gil", 0) is None

    restarted = make_processor(store, sink)  # the worker died before the commit: the same records again
    redelivered = await restarted.process(erasing.records)
    assert (redelivered.applied, redelivered.redelivered) == (0, 1)
    assert Counter(sink.records[published + len(out) :]) == Counter(out)

    await commit(processor, store, stats)
    assert await store.load_state("gil") == Loaded(0, None, None) and await store.erasing() == []
    assert [cid for chunk in [c async for c in store.scan_customers()] for cid in chunk] == ["hal"]
    assert "gil" not in repr(store.snapshot())  # nothing in the store names the customer any more
    await assert_consistent(store, sink.records)


async def test_invalid_records_go_to_the_dlq_with_their_reason_and_the_rest_applies() -> None:
    feed = Feed()
    feed.add(purchase("ok-1", "ivy", NOW - DAY, 5.0))
    feed.add(b"{not json", topic="events.purchase", key=b"ivy")
    feed.add({**purchase("neg", "ivy", NOW, 1.0), "amount": -3})
    feed.add(purchase("nokey", "ivy", NOW, 1.0), key=None)
    feed.add(purchase("other", "ivy", NOW, 1.0), key=b"jon")
    feed.add(purchase("future", "ivy", NOW + 3650 * DAY, 1.0))
    feed.add({**browse("act", "ivy", NOW), "action": "teleport"})
    feed.add(purchase("ok-2", "ivy", NOW - DAY, 7.0))
    store, sink = MemoryStore(), ListSink()
    stats = await make_processor(store, sink).process(feed.records)

    dead = values(sink.records, DLQ_TOPIC)
    assert sorted((d["topic"], d["offset"], d["error"]["code"]) for d in dead) == [
        ("events.browse", 0, "unknown_action"),
        ("events.purchase", 1, "not_json"),
        ("events.purchase", 2, "bad_value"),
        ("events.purchase", 3, "key_mismatch"),
        ("events.purchase", 4, "key_mismatch"),
        ("events.purchase", 5, "future_ts"),
    ]
    assert all(d["error"]["message"] for d in dead)
    assert next(d for d in dead if d["offset"] == 1)["value"] == "{not json"  # the original bytes, recoverable
    assert (stats.applied, stats.rejected) == (2, 6)
    assert stats.next_offsets == {TopicPartition("events.purchase", 0): 7, TopicPartition("events.browse", 0): 1}
    ivy = await state_of(store, "ivy")
    assert (ivy.orders, ivy.spend) == (2, 12.0)


async def test_a_customer_whose_state_cannot_be_read_is_quarantined_and_its_events_dead_lettered() -> None:
    store, sink = MemoryStore(), ListSink()
    assert await store.save([write("kim", 0, b"{broken", home=0, next_check=NOW)])
    feed = Feed()
    feed.add(purchase("p1", "kim", NOW - DAY, 50.0))
    feed.add(purchase("p2", "lea", NOW - DAY, 50.0))
    processor = make_processor(store, sink)
    stats = await processor.process(feed.records)
    assert [(d["offset"], d["error"]["code"]) for d in values(sink.records, DLQ_TOPIC)] == [(0, "processing_error")]
    assert (await store.lookup("kim")).quarantined == b"fold"
    assert (await store.load_state("kim")).blob == b"{broken"  # left as it was, for a person to look at
    assert stats.applied == 1 and (await state_of(store, "lea")).orders == 1
    assert counted(processor, "segengine_customers_quarantined_total", stage="fold") == 1


async def at_risk_soon(sink: ListSink) -> tuple[Feed, MemoryStore, BatchProcessor]:
    """``max`` (partition 4) bought 59 days ago, applied and committed: at risk past 60 days
    without a purchase, so due within two days."""
    feed = Feed()
    feed.add(purchase("p1", "max", NOW - 59 * DAY, 40.0), partition=4)
    store = MemoryStore()
    processor = make_processor(store, sink)
    await commit(processor, store, await processor.process(feed.records))
    return feed, store, processor


async def test_a_timer_decision_keeps_its_customer_due_until_its_outbox_is_published() -> None:
    sink = ListSink()
    _, store, processor = await at_risk_soon(sink)
    assert (await state_of(store, "max")).members["lifecycle"] == "active"
    due = await store.next_check("max", 4)
    assert due is not None and NOW < due <= NOW + 2 * DAY

    entries = await store.due(4, NOW + 2 * DAY, 100)
    assert entries == [TimerEntry("max", due)]
    published = len(sink.records)
    prepared = await processor.fire_timers(entries, 4)
    await processor.publish(prepared)
    moved = values(sink.records[published:], CHANGES_TOPIC)
    assert ("lifecycle", "active", "at_risk") in {(c["dimension"], c["from"], c["to"]) for c in moved}
    assert all(c["cause"]["kind"] == "timer" for c in moved)
    # Its outbox has no input record to send it again: the customer stays due until it is published.
    assert await store.next_check("max", 4) == due and (await store.load_state("max")).outbox
    [done] = prepared.stats.outboxes
    assert done.reschedule and done.next_check is not None and done.next_check > due
    await store.outbox_published(prepared.stats.outboxes)
    assert await store.next_check("max", 4) == done.next_check and (await store.load_state("max")).outbox is None
    await assert_consistent(store, sink.records)


async def test_a_customer_whose_state_cannot_be_read_leaves_the_due_loop() -> None:
    store = MemoryStore()
    assert await store.save([write("kim", 0, b"{broken", home=0, next_check=NOW)])
    processor = make_processor(store)
    await processor.fire_timers(await store.due(0, NOW, 10), 0)
    assert (await store.lookup("kim")).quarantined == b"timer"
    assert await store.due(0, NOW, 10) == []
