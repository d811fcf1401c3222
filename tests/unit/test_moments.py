"""The next moments a processor keeps of the customers it wrote (segengine.writes.Moments) are
taken instead of being worked out again, and change nothing: the same events and timers give
the same records and states with and without them, through rules switches and other writers."""

from __future__ import annotations

import random
from pathlib import Path

from segengine.metrics import Metrics
from segengine.pipeline import BatchProcessor
from segengine.records import OutRecord
from segengine.rules import RuleSet, load_rules
from segengine.state import CustomerState
from segengine.store_memory import MemoryStore
from segengine.timers import Moment
from segengine.writes import Moments
from tests.unit.test_batch_memory import DAY, NOW, SETTINGS, Feed, ListSink, browse, commit, purchase

ROOT = Path(__file__).resolve().parents[2]
RULES = load_rules(ROOT / "rules")  # every shipped pack: timers of every kind


class MovingClock:
    """Decisions at ``now``, which the test moves on between batches."""

    def __init__(self) -> None:
        self.at = NOW - 60 * DAY

    def now_for(self, event_ts: int) -> int:
        return self.at

    def now(self) -> int:
        return self.at

    def observe(self, topic: str, partition: int, event_ts: int) -> None:
        return None


class Counting(Moments):
    def __init__(self, limit: int = 100_000) -> None:
        super().__init__(limit)
        self.taken = 0

    def get(self, cid: str, version: int, rules: RuleSet, state: CustomerState) -> Moment | None:
        moment = super().get(cid, version, rules, state)
        self.taken += moment is not None
        return moment


class Never(Moments):
    def get(self, cid: str, version: int, rules: RuleSet, state: CustomerState) -> Moment | None:
        return None


async def run(moments: Moments, seed: int = 7) -> tuple[list[OutRecord], dict[str, bytes | None]]:
    """60 days of events of 40 customers in daily batches, the due timers fired each day, a
    rules switch half way and another writer's purchases now and then."""
    rng = random.Random(seed)
    store, sink, clock = MemoryStore(), ListSink(), MovingClock()
    processor = BatchProcessor(SETTINGS, RULES, store, sink, clock, Metrics(process=False))
    processor.moments = moments
    other = BatchProcessor(SETTINGS, RULES, store, sink, clock, Metrics(process=False))
    feed, other_feed = Feed(), Feed()
    for day in range(60):
        clock.at += DAY
        if day == 30:
            processor.rules = load_rules(ROOT / "rules")  # the same rules, a new object: every moment stale
        start = len(feed.records)
        for i in range(rng.randrange(0, 25)):
            cid = f"c{rng.randrange(40)}"
            ts = clock.at - rng.randrange(DAY)
            if rng.random() < 0.3:
                feed.add(purchase(f"p{day}-{i}", cid, ts, round(rng.uniform(5, 400), 2)))
            else:
                feed.add(browse(f"b{day}-{i}", cid, ts))
        if day % 4 == 1:  # another worker (after a rebalance, say) writes some of the same customers
            other_start = len(other_feed.records)
            for i in range(5):
                cid = f"c{rng.randrange(40)}"
                other_feed.add(purchase(f"o{day}-{i}", cid, clock.at - rng.randrange(DAY), 50.0), partition=1)
            await commit(other, store, await other.process(other_feed.records[other_start:]))
        await commit(processor, store, await processor.process(feed.records[start:]))
        for partition in list(store.timers):
            due = await store.due(partition, clock.at, 1000)
            if due:
                fired = await processor.fire_timers(due, partition)
                await processor.publish(fired)
                await commit(processor, store, fired.stats)
    return sink.records, {cid: h.s for cid, h in store.hashes.items()}


async def test_the_moments_kept_change_nothing_and_are_taken() -> None:
    counting = Counting()
    kept = await run(counting)
    assert kept == await run(Never())
    assert counting.taken > 100  # most decisions took the moment the last write worked out
    assert len(kept[0]) > 200  # enough happened to compare


async def test_a_full_cache_drops_its_older_half_and_still_changes_nothing() -> None:
    small = Counting(limit=8)
    assert await run(small, seed=3) == await run(Never(), seed=3)
    assert 0 < len(small._held) <= 8


def test_a_moment_is_taken_only_for_the_state_it_was_worked_out_for() -> None:
    rules = load_rules(ROOT / "rules")
    moments, state = Moments(), CustomerState()
    state.checked_at = NOW
    moment: Moment = (NOW + DAY, frozenset({"age"}))
    moments.put("a", 3, rules, NOW, moment)
    assert moments.get("a", 3, rules, state) == moment
    assert moments.get("a", 4, rules, state) is None  # another writer wrote since
    assert moments.get("b", 3, rules, state) is None
    assert moments.get("a", 3, load_rules(ROOT / "rules"), state) is None  # other rules
    decided_later = CustomerState()
    decided_later.checked_at = NOW + 1
    assert moments.get("a", 3, rules, decided_later) is None
    rules.population.replace({}, NOW)  # a new population sample
    assert moments.get("a", 3, rules, state) is None
    moments.put("a", 4, rules, NOW, None)  # no next moment (or no timers): nothing kept
    assert moments.get("a", 4, rules, state) is None
