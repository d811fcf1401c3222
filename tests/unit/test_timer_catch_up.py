"""A due customer whose later moments have come too is decided through all of them in one write
(``fire_timers(..., through=...)``, as the due loop calls it): the same records, each moment at
its own time with its own change id, and the same stored customers as when the due loop fires
the moments one by one, in fewer rounds. A customer's timer is set for the first of its moments
that decides anything (``deciding_moment``): the moments before it are held to decide nothing
when decided one by one. ``BatchProcessor`` on a ``MemoryStore``."""

from __future__ import annotations

import random
import secrets
from collections import defaultdict
from typing import Any

import pytest

from segengine.evaluate import LOOKAHEAD, FoldResult, decide, deciding_moment
from segengine.records import OutRecord
from segengine.store_memory import MemoryStore
from segengine.timers import next_moment
from segengine.writes import loaded_state
from tests.unit.test_batch_memory import DAY, NOW, RULES, Feed, FixedClock, ListSink, browse, feedback, purchase
from tests.unit.test_state_cache import fields, processor_for, signatures


def history(seed: int) -> Feed:
    """Customers last seen between a year and a day before NOW: by NOW, several of their
    moments (windows closing, lifecycle stages, scores) have come."""
    rng = random.Random(seed)
    events = []
    for c in range(30):
        cid = f"h{c}"
        last = NOW - rng.randrange(1, 365) * DAY
        for n in range(rng.randrange(1, 6)):
            ts = last - n * rng.randrange(1, 40) * DAY
            if rng.random() < 0.5:
                events.append(purchase(f"{cid}-{n}", cid, ts, round(rng.uniform(5, 300), 2)))
            elif rng.random() < 0.8:
                events.append(browse(f"{cid}-{n}", cid, ts, rng.choice(["view", "add_to_cart"])))
            else:
                events.append(feedback(f"{cid}-{n}", cid, ts, "nps", rng.randrange(11)))
    feed = Feed()
    for body in sorted(events, key=lambda e: e["ts"]):
        feed.add(body)
    return feed


class EventTime(FixedClock):
    """Each event decided at its own time; time is NOW for the due loop."""

    def now_for(self, event_ts: int) -> int:
        return event_ts


def per_customer(records: list[OutRecord]) -> dict[bytes | None, list[OutRecord]]:
    """Each customer's records in order (records of different customers may interleave otherwise)."""
    out: dict[bytes | None, list[OutRecord]] = defaultdict(list)
    for r in records:
        out[r.key].append(r)
    return dict(out)


async def due_loop(seed: int, through: bool) -> tuple[dict[bytes | None, list[OutRecord]], dict[str, Any], int]:
    store = MemoryStore()
    processor = processor_for(store, 100)
    processor.clock = EventTime()
    await processor.process(history(seed).records)
    sink = processor.sink
    assert isinstance(sink, ListSink)
    sink.records.clear()
    rounds = 0
    while due := await store.due(0, NOW, 500):
        prepared = await processor.fire_timers(due, 0, NOW if through else None)
        await processor.publish(prepared)
        await processor.outbox_published(prepared.stats.outboxes)
        rounds += 1
        assert rounds < 500, "the due loop never ends"
    states = {cid: fields(loaded_state(h.loaded())) for cid, h in store.hashes.items()}
    stored = {
        "states": {cid: {k: v for k, v in state.items() if k != "checked_at"} for cid, state in states.items()},
        "checked_at": {cid: state["checked_at"][1] for cid, state in states.items()},
        "changes": store.changes,  # the recent changes
        "timers": store.timers,
        "population": store.counters,
    }
    return per_customer(sink.records), stored, rounds


async def test_later_moments_are_decided_in_the_same_write_as_if_fired_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for seed in range(3):
        monkeypatch.setattr(secrets, "token_hex", signatures())
        one_by_one, stored, rounds = await due_loop(seed, through=False)
        monkeypatch.setattr(secrets, "token_hex", signatures())
        together, stored_together, rounds_together = await due_loop(seed, through=True)
        assert sum(map(len, one_by_one.values())) > 100  # time moved these customers a lot
        assert rounds > rounds_together == 1  # several moments each, before: one round now
        assert together == one_by_one
        # the last decision's time aside (moments that decide nothing are decided through in
        # one write, and left to come in the other), the same customers are stored
        decided, decided_together = stored.pop("checked_at"), stored_together.pop("checked_at")
        assert stored_together == stored
        assert all(decided_together[cid] >= at for cid, at in decided.items())


async def test_a_timer_is_set_for_the_first_moment_that_decides_anything() -> None:
    """Each customer's moments from its last decision, decided one by one as a due loop would:
    every one before ``deciding_moment``'s decides nothing (no record, the memberships and
    grace periods as they were), and that one, within LOOKAHEAD, decides something; the
    state asked about is left as it was."""
    store = MemoryStore()
    processor = processor_for(store, 100)
    processor.clock = EventTime()
    await processor.process(history(7).records)
    plan, skipped, deciding = RULES.time_plan, 0, 0
    for cid, held in store.hashes.items():
        state = loaded_state(held.loaded())
        assert state.checked_at is not None
        moment = next_moment(plan, state, state.checked_at)
        before = fields(state)
        chosen = deciding_moment(RULES, state, cid, moment)
        assert fields(state) == before
        steps = 0
        while moment[0] is not None and moment != chosen:
            due, moving = moment
            assert chosen[0] is None or due < chosen[0]
            kept = (dict(state.members), dict(state.member_since), dict(state.grace_since))
            assert not decide(RULES, state, cid, due, {"kind": "timer"}, f"timer:{due}", FoldResult(), "timer", moving)
            assert (state.members, state.member_since, state.grace_since) == kept
            moment = next_moment(plan, state, due)
            steps += 1
        assert moment == chosen
        skipped += steps
        if steps < LOOKAHEAD and chosen[0] is not None:
            due, moving = chosen
            result, grace = FoldResult(), dict(state.grace_since)
            outputs = decide(RULES, state, cid, due, {"kind": "timer"}, f"timer:{due}", result, "timer", moving)
            assert outputs or state.grace_since != grace
            deciding += 1
    assert skipped > 10 and deciding > 10  # moments were passed over, and timers set for others
