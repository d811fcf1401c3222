"""A worker SIGKILLed after its Redis write and before its commit: after a restart the
state equals the oracle, no change event is lost, and duplicates carry the same change_id.
(Timers and population samples are off here: the oracle is a pure fold of the events.)"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import defaultdict

import orjson
from redis.asyncio import Redis

from segengine.datasets import iter_purchase_events, read_cdnow
from segengine.devstack import DevStack
from segengine.evaluate import CHANGES_TOPIC, fold_customer
from segengine.events import Event, Source
from segengine.rules import load_rules
from segengine.settings import Settings
from segengine.state import CustomerState
from segengine.store_redis import RedisStore
from tests.integration.support import KEYS, RunningWorker, consume_all, faulty_worker, produce, settings_for

N = 6000


def expected_changes(
    events: list[dict[str, object]], offsets: dict[str, int], partitions: dict[str, int]
) -> tuple[dict[str, str], dict[str, CustomerState], set[str]]:
    """A pure fold of the same events in the same order: change_id -> customer, states, action ids."""
    rules = load_rules(Settings().rules_file)
    by_customer: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        cid = str(ev["customer_id"])
        src = Source("events.purchase", partitions[str(ev["event_id"])], offsets[str(ev["event_id"])])
        by_customer[cid].append(Event(str(ev["event_id"]), cid, "purchase", int(ev["ts"]), ev, src))  # type: ignore[call-overload]
    changes: dict[str, str] = {}
    states: dict[str, CustomerState] = {}
    actions: set[str] = set()
    for cid, evs in by_customer.items():
        state = CustomerState()
        result = fold_customer(
            rules,
            state,
            cid,
            sorted(evs, key=lambda e: e.source.offset),
            now_for=lambda ts: ts,
            committed={},
            dedupe_horizon_ms=7 * 86_400_000,
        )
        changes.update({o.value["change_id"]: cid for o in result.outputs if o.topic == CHANGES_TOPIC and o.value})
        actions.update(o.value["action_id"] for o in result.outputs if o.topic.startswith("actions.") and o.value)
        states[cid] = state
    return changes, states, actions


async def test_kill_after_redis_write_before_commit_loses_and_doubles_nothing(
    stack: DevStack, redis_client: Redis
) -> None:
    events = [ev for _, ev in iter_purchase_events(read_cdnow()[:N])]
    await produce(stack, "events.purchase", [(ev["customer_id"], ev) for ev in events])
    records = await consume_all(stack, "events.purchase", expect=N)
    offsets = {orjson.loads(r.value)["event_id"]: r.offset for r in records}
    partitions = {orjson.loads(r.value)["event_id"]: r.partition for r in records}

    env = {**os.environ, "SEGENGINE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "SEGENGINE_REDIS_URL": stack.redis_url,
           "SEGENGINE_CLOCK": "event", "SEGENGINE_BATCH_MAX_RECORDS": "500",
           "SEGENGINE_TIMERS": "false", "SEGENGINE_QUANTILES_REFRESH_S": "0"}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *faulty_worker("kill_after_save"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(proc.wait(), 60) == -signal.SIGKILL
    written = await redis_client.hlen(KEYS.population(0))
    assert written > 0, "the killed worker had written state"
    assert len(await consume_all(stack, "segments.changes")) == 0, "nothing was published before the kill"

    async with RunningWorker(
        settings_for(stack, clock="event", timers=False, quantiles_refresh_s=0)
    ) as w:  # the oracle knows events only
        await w.wait_for(N, timeout=120)

    want_changes, want_states, want_actions = expected_changes(events, offsets, partitions)
    published = [orjson.loads(r.value) for r in await consume_all(stack, "segments.changes")]
    got_ids = [c["change_id"] for c in published]
    assert set(got_ids) == set(want_changes), "every expected change, and no other, was published"
    actions = [
        orjson.loads(r.value)
        for t in ("actions.retention", "actions.loyalty", "actions.service")
        for r in await consume_all(stack, t)
    ]
    assert want_actions and {a["action_id"] for a in actions} == want_actions, (
        "every expected action, and no other, was sent"
    )
    per_trigger: dict[tuple[str, str], set[str]] = defaultdict(set)
    for a in actions:
        per_trigger[(a["trigger_change_id"], a["action"])].add(a["action_id"])
    assert all(len(ids) == 1 for ids in per_trigger.values()), "redelivery never made a second action for a trigger"
    loaded = await RedisStore(redis_client).load(want_states)
    for cid, want in want_states.items():
        got = CustomerState.loads(loaded[cid].blob)
        assert (got.orders, got.spend, got.members) == (want.orders, want.spend, want.members), cid
