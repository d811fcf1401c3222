"""Decisions with no event (due timers, re-evaluations) beside event batches: they hold the
state lock only while they write, never while the broker acknowledges, and while events
flow they leave most of the time to them (``background_share``)."""

from __future__ import annotations

import asyncio
import functools
import time

from segengine.evaluate import CHANGES_TOPIC
from segengine.pipeline import BatchStats, Prepared
from segengine.records import OutRecord
from segengine.store_memory import MemoryStore
from segengine.worker.decisions import TURN, Decisions
from segengine.worker.hooks import Hooks
from segengine.worker.retry import RetryPolicy
from tests.unit.test_batch_memory import (
    DAY,
    NOW,
    ListSink,
    assert_consistent,
    at_risk_soon,
    browse,
    change_ids,
    commit,
    make_processor,
    values,
)


class HeldSink(ListSink):
    """Publishes once ``release`` is set; ``entered`` says a publish is waiting for the acks."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def publish(self, records: list[OutRecord]) -> None:
        if self.hold:
            self.entered.set()
            await self.release.wait()
        await super().publish(records)


async def test_an_event_batch_writes_while_a_timer_decision_waits_for_its_acks_and_nothing_is_lost() -> None:
    sink = HeldSink()
    feed, store, processor = await at_risk_soon(sink)
    decisions = Decisions(processor, store, RetryPolicy(attempts=1), processor.metrics, Hooks())
    entries = await store.due(4, NOW + 2 * DAY, 100)
    assert [e.customer_id for e in entries] == ["max"]

    before = len(sink.records)
    sink.hold = True
    step = functools.partial(processor.fire_timers, partition=4)
    timer = asyncio.create_task(decisions.decide_in_turns(step, entries, stage="timers"))
    await asyncio.wait_for(sink.entered.wait(), 10)
    assert not decisions.lock.locked()  # written; the lock is free while the broker acknowledges

    # An event batch of the same customer comes between: it writes on what the timer wrote.
    feed.add(browse("b1", "max", NOW), partition=4)
    async with decisions.lock:
        since = decisions.order.epoch()
        batch = await processor.prepare(feed.records[-1:])
        ticket = decisions.order.ticket(since)
    timer_outbox = (await store.load_state("max")).outbox
    assert timer_outbox is not None  # the timer's records, not known published yet, are still in it
    # ... and the customer stays due at once: should the timer's publish fail, its records go out again
    [event_write] = batch.stats.outboxes
    assert event_write.reschedule
    publishing = asyncio.create_task(decisions.publish_in_turn(batch, ticket))
    await asyncio.sleep(0.01)
    assert not publishing.done()  # its turn comes after the timer's

    sink.release.set()
    [fired] = await asyncio.wait_for(timer, 10)
    await asyncio.wait_for(publishing, 10)
    await commit(processor, store, batch.stats)
    assert change_ids(sink.records[before:]) == change_ids(fired.records) + change_ids(
        batch.records
    )  # in decision order
    moved = {(c["dimension"], c["from"], c["to"]) for c in values(fired.records, CHANGES_TOPIC)}
    assert ("lifecycle", "active", "at_risk") in moved
    loaded = await store.load_state("max")
    assert loaded.outbox is None  # published, then dropped once
    next_check = await store.next_check("max", 4)
    assert next_check is not None and next_check > entries[0].due  # the real next check again
    await assert_consistent(store, sink.records)


def held_step(hold_s: float):  # type: ignore[no-untyped-def]
    """A decision step that holds the state lock for ``hold_s`` and decides nothing."""

    async def step(_: list[int]) -> Prepared:
        await asyncio.sleep(hold_s)
        return Prepared(BatchStats(), [])

    return step


async def test_while_events_flow_decisions_with_no_event_leave_them_the_rest_of_the_time() -> None:
    store = MemoryStore()
    processor = make_processor(store)
    decisions = Decisions(processor, store, RetryPolicy(attempts=1), processor.metrics, Hooks(), 0.25)
    decisions.state_written("batch", Prepared(BatchStats(), []))  # an event batch was just written
    started = time.monotonic()
    # the due loop and a re-score at once, a turn each: the share is theirs together
    await asyncio.gather(
        decisions.decide_in_turns(held_step(0.1), [1], stage="timers"),
        decisions.decide_in_turns(held_step(0.1), [2], stage="rescore"),
    )
    assert time.monotonic() - started >= 0.1 / 0.25 + 0.1 - 0.01  # the second turn no sooner than 0.4 s on


async def test_with_no_events_flowing_decisions_with_no_event_do_not_pause() -> None:
    store = MemoryStore()
    processor = make_processor(store)
    decisions = Decisions(processor, store, RetryPolicy(attempts=1), processor.metrics, Hooks(), 0.001)
    started = time.monotonic()
    await decisions.decide_in_turns(held_step(0.01), list(range(TURN + 1)), stage="timers")
    assert time.monotonic() - started < 5  # a pause at this share would be 10 s


async def test_while_events_flow_a_long_list_is_decided_a_turn_at_a_time_else_at_once() -> None:
    store, sink = MemoryStore(), ListSink()
    processor = make_processor(store, sink)
    decisions = Decisions(processor, store, RetryPolicy(attempts=1), processor.metrics, Hooks(), 1.0)
    sizes: list[int] = []

    async def step(items: list[int]) -> Prepared:
        assert decisions.lock.locked()  # each turn writes under the state lock
        sizes.append(len(items))
        return Prepared(BatchStats(), [OutRecord("segments.changes", str(i).encode(), b"{}") for i in items])

    items = list(range(2 * TURN + 1))
    assert len(await decisions.decide_in_turns(step, items, stage="timers")) == 1  # no event batch waits
    decisions.state_written("batch", Prepared(BatchStats(), []))  # events flow
    assert len(await decisions.decide_in_turns(step, items, stage="timers")) == 3
    assert sizes == [2 * TURN + 1, TURN, TURN, 1]
    assert [int(r.key) for r in sink.records] == items + items  # every turn, in order
