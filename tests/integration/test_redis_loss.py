"""Redis that loses its data under a running engine is detected, never silently absorbed,
and `segengine rebuild` recovers: on the real embedded broker and Redis (the test's own:
flushing it touches nothing else).

A worker applies a purchase history, commits, and Redis is flushed under it: the worker
stops with RedisLost naming the recovery; a restarted worker refuses too (the loss is
recorded). After the rebuild a worker replays the input topics from their start and ends in
the very state the first run had: every customer's memberships and the exact population."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from redis.asyncio import Redis

from segengine.devstack import DevStack
from segengine.errors import RedisLost
from segengine.ledger import LEDGER_KEY, refuse_eviction
from segengine.rebuild import GroupBusy, rebuild
from segengine.settings import Settings
from segengine.state import CustomerState
from segengine.store_redis import RedisStore
from tests.integration.support import (
    FAST_GROUP,
    RunningWorker,
    alive,
    produce,
    settings_for,
    wait_committed,
    wait_timers_done,
)

DAY = 86_400_000
T0 = 1_700_000_000_000
GROUP = "loss"


def history(customers: int = 40) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """(topic, event) in event-time order: purchases and browsing over a year; the last time."""
    rnd = random.Random(7)
    events: list[tuple[str, dict[str, Any]]] = []
    for c in range(customers):
        cid = f"loss-{c:03}"
        for i in range(rnd.randint(1, 6)):
            ts = T0 + rnd.randint(0, 360) * DAY + rnd.randint(0, DAY)
            if rnd.random() < 0.6:
                body = {"type": "purchase", "order_id": f"{cid}-o{i}", "amount": round(rnd.uniform(5, 400), 2)}
                events.append(("events.purchase", {"event_id": f"{cid}-p{i}", "customer_id": cid, "ts": ts, **body}))
            else:
                body = {"type": "browse", "action": rnd.choice(["view", "add_to_cart", "search"])}
                events.append(("events.browse", {"event_id": f"{cid}-b{i}", "customer_id": cid, "ts": ts, **body}))
    events.sort(key=lambda e: e[1]["ts"])
    return events, max(e["ts"] for _, e in events)


async def produce_all(stack: DevStack, events: list[tuple[str, dict[str, Any]]]) -> None:
    for topic in ("events.purchase", "events.browse"):
        await produce(stack, topic, [(e["customer_id"], e) for t, e in events if t == topic])


def settings(stack: DevStack) -> Settings:
    return settings_for(stack, group_id=GROUP, clock="event", timer_interval_ms=50, quantiles_refresh_s=0, **FAST_GROUP)


async def state_of_store(redis: Redis) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, int]]]:
    store = RedisStore(redis)
    ids = [cid async for chunk in store.scan_customers() for cid in chunk]
    loaded = await store.load(ids)
    members = {cid: CustomerState.loads(row.blob).members for cid, row in loaded.items() if row.blob}
    population = {d: {s: n for s, n in segs.items() if n} for d, segs in (await store.population()).items()}
    return members, {d: segs for d, segs in population.items() if segs}


async def stops_with_redis_lost(worker: RunningWorker, timeout: float) -> RedisLost:
    assert worker.task is not None
    try:
        await asyncio.wait_for(asyncio.shield(worker.task), timeout)
    except TimeoutError:
        worker.worker.stop()
        await worker.task
        raise AssertionError(f"the worker did not stop on its own within {timeout} s") from None
    except RedisLost as exc:
        return exc
    raise AssertionError("the worker stopped without an error")


async def test_a_flushed_redis_stops_the_worker_and_a_rebuild_restores_the_state(
    stack: DevStack, redis_client: Redis
) -> None:
    events, until = history()
    first = RunningWorker(settings(stack))
    await first.__aenter__()
    await produce_all(stack, events)
    await wait_committed(stack, GROUP, timeout=180, alive=alive(first))
    await wait_timers_done(stack, until, timeout=120, alive=alive(first))
    before = await state_of_store(redis_client)
    assert len(before[0]) == 40 and before[1]
    assert await redis_client.exists(LEDGER_KEY)

    await redis_client.flushall()  # under the running worker
    lost = await stops_with_redis_lost(first, timeout=60)
    assert "segengine rebuild" in str(lost)

    again = RunningWorker(settings(stack))  # a restart does not take the empty Redis for a fresh one
    await again.__aenter__()
    assert "segengine rebuild" in str(await stops_with_redis_lost(again, timeout=180))

    member = AIOKafkaConsumer(
        "events.purchase",
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=GROUP,
        partition_assignment_strategy=(RangePartitionAssignor,),
    )
    await member.start()  # a member of the group, as a running worker is
    try:
        await member.getmany(timeout_ms=3000)
        with pytest.raises(GroupBusy):
            await rebuild(redis_client, stack.kafka_bootstrap, GROUP, wait_s=0)
    finally:
        await member.stop()
    done = await rebuild(redis_client, stack.kafka_bootstrap, GROUP, wait_s=60)
    assert set(done.replay_from.values()) == {0} and not done.truncated  # every record is still there

    async with RunningWorker(settings(stack)) as last:
        await last.wait_for(len(events), timeout=180)  # the committed offsets are already there: count the replay
        await wait_committed(stack, GROUP, timeout=180, alive=alive(last))
        await wait_timers_done(stack, until, timeout=120, alive=alive(last))
        after = await state_of_store(redis_client)
    assert after == before  # every membership, and the population counts exact


async def test_a_redis_that_may_evict_the_engine_s_keys_is_refused(redis_client: Redis) -> None:
    await redis_client.config_set("maxmemory", "1gb")
    await redis_client.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(Exception, match="noeviction"):
        await refuse_eviction(redis_client)
    await redis_client.config_set("maxmemory-policy", "volatile-lru")  # the engine's keys never expire: safe
    await refuse_eviction(redis_client)
