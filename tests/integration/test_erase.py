"""Forgetting a customer on the real embedded broker and Redis: after an erase nothing in
Redis names them, their memberships end with exits (cause.kind erase) and a tombstone,
the populations drop, a redelivered erase changes nothing, and a worker that stopped
between the commit and the deletion leaves nothing behind for long."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from redis.asyncio import Redis

from segengine.clock import make_clock
from segengine.devstack import DevStack
from segengine.evaluate import change_id
from segengine.kafka import KafkaSink
from segengine.ledger import Ledger
from segengine.metrics import Metrics
from segengine.pipeline import BatchProcessor
from segengine.records import TopicPartition as SegTopicPartition
from segengine.rules import load_rules
from segengine.state import CustomerState
from segengine.store_redis import HISTORY, RedisStore, recent_entries
from segengine.writes import recent_record
from tests.integration.support import KEYS, RunningWorker, consume_all, produce, settings_for, values

DAY = 86_400_000
NOW = int(time.time() * 1000)
# No due loop, no population sample: nothing but the events moves anyone (the timer
# entries are still written, and must go with the customer).
QUIET: dict[str, Any] = {"timers": False, "quantiles_refresh_s": 0}


def events_of(customer: str) -> list[tuple[str, dict[str, Any]]]:
    """(topic, event): a purchase history, a browse, a complaint and a profile."""
    base = {"customer_id": customer}
    return [
        (
            "events.purchase",
            {
                **base,
                "event_id": f"{customer}-p1",
                "type": "purchase",
                "ts": NOW - 20 * DAY,
                "order_id": f"{customer}-o1",
                "amount": 120.0,
            },
        ),
        (
            "events.purchase",
            {
                **base,
                "event_id": f"{customer}-p2",
                "type": "purchase",
                "ts": NOW - 2 * DAY,
                "order_id": f"{customer}-o2",
                "amount": 260.0,
            },
        ),
        (
            "events.browse",
            {
                **base,
                "event_id": f"{customer}-b1",
                "type": "browse",
                "ts": NOW - DAY,
                "action": "add_to_cart",
                "category": "runners",
            },
        ),
        (
            "events.feedback",
            {**base, "event_id": f"{customer}-f1", "type": "feedback", "ts": NOW - DAY, "kind": "nps", "score": 3},
        ),
        (
            "events.profile",
            {
                **base,
                "event_id": f"{customer}-a1",
                "type": "profile",
                "ts": NOW - DAY,
                "attributes": {"city": "Lyon", "age": 41},
            },
        ),
    ]


def erase_event(customer: str, n: int = 1) -> dict[str, Any]:
    return {"event_id": f"{customer}-erase{n}", "customer_id": customer, "type": "erase", "ts": NOW}


async def produce_all(stack: DevStack, events: list[tuple[str, dict[str, Any]]]) -> None:
    for topic, event in events:
        await produce(stack, topic, [(str(event["customer_id"]), event)])


async def naming(redis: Redis, needle: str) -> list[str]:
    """Every place in Redis that contains ``needle``: key names, string values, hash fields
    and values, list items, set and sorted-set members (a full SCAN)."""
    found: list[str] = []
    raw = needle.encode()
    async for key in redis.scan_iter(count=500):
        if raw in key:
            found.append(f"key {key!r}")
        kind = (await redis.type(key)).decode()
        if kind == "string":
            items = [await redis.get(key)]
        elif kind == "hash":
            items = [x for kv in (await redis.hgetall(key)).items() for x in kv]
        elif kind == "list":
            items = await redis.lrange(key, 0, -1)
        elif kind == "set":
            items = list(await redis.smembers(key))
        elif kind == "zset":
            items = await redis.zrange(key, 0, -1)
        else:
            items = []
        found += [f"{kind} {key!r}" for item in items if item is not None and raw in item]
    return found


async def eventually_nothing_names(redis: Redis, needle: str, timeout: float = 15) -> list[str]:
    """The erase's deletion follows its commit: wait for it (what a user would see)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (found := await naming(redis, needle)) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    return found


async def population(redis: Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis.hgetall(KEYS.population(0))).items()}


async def memberships(redis: Redis, customer: str) -> dict[str, str]:
    blob = await redis.hget(KEYS.state(customer), "s")
    assert blob is not None, f"no state for {customer}"
    return CustomerState.loads(blob).members


async def commit(
    stack: DevStack, group: str, offsets: dict[TopicPartition, int], *, as_worker: Redis | None = None
) -> None:
    """Set the group's committed offsets (as an operator resetting a consumer group would);
    ``as_worker``: recording them first in the engine's commit ledger, as a worker does."""
    if as_worker is not None:
        ledger = Ledger(as_worker)
        await ledger.check({})  # a fresh engine's ledger
        await ledger.before_commit({SegTopicPartition(tp.topic, tp.partition): o for tp, o in offsets.items()})
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        partition_assignment_strategy=(RangePartitionAssignor,),
    )
    await consumer.start()
    try:
        consumer.subscribe(sorted({tp.topic for tp in offsets}))  # a member of the group, alone in it
        deadline = asyncio.get_running_loop().time() + 20
        while not set(offsets) <= consumer.assignment():
            assert asyncio.get_running_loop().time() < deadline, "the group did not assign the partitions"
            await asyncio.sleep(0.1)
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_an_erase_forgets_the_customer_everywhere(stack: DevStack, redis_client: Redis) -> None:
    await produce_all(stack, events_of("erin-7f3a") + events_of("fred-91c2"))
    async with RunningWorker(settings_for(stack, **QUIET)) as w:
        await w.wait_for(10)
        before_members = await memberships(redis_client, "erin-7f3a")
        fred_members = await memberships(redis_client, "fred-91c2")
        before = await population(redis_client)
        assert len(before_members) >= 3, before_members
        seen = await naming(redis_client, "erin-7f3a")  # the scan does see a customer: keys, the timer entry
        assert any(f.startswith("key") for f in seen) and any(f.startswith("zset") for f in seen), seen
        assert recent_entries(await redis_client.hget(KEYS.state("erin-7f3a"), "h") or b"")

        await produce(stack, "events.profile", [("erin-7f3a", erase_event("erin-7f3a"))])
        await w.wait_for(11)
        assert await eventually_nothing_names(redis_client, "erin-7f3a") == []

    # The populations dropped by exactly erin's memberships; fred is untouched.
    after = await population(redis_client)
    expected = dict(before)
    for dimension, segment in before_members.items():
        expected[f"{dimension}\x1f{segment}"] -= 1
    assert after == expected
    assert await memberships(redis_client, "fred-91c2") == fred_members

    # One exit per membership, cause.kind erase, with a deterministic change_id.
    (erase_record,) = [
        r for r in await consume_all(stack, "events.profile") if orjson.loads(r.value)["type"] == "erase"
    ]
    exits = [
        c
        for c in values(await consume_all(stack, "segments.changes"))
        if c["customer_id"] == "erin-7f3a" and c["cause"]["kind"] == "erase"
    ]
    assert {(c["dimension"], c["from"], c["to"]) for c in exits} == {(d, s, None) for d, s in before_members.items()}
    assert len(exits) == len(before_members)
    cause = {
        "kind": "erase",
        "event_id": "erin-7f3a-erase1",
        "topic": "events.profile",
        "partition": erase_record.partition,
        "offset": erase_record.offset,
    }
    assert all(c["cause"] == cause for c in exits)
    cause_key = f"events.profile:{erase_record.partition}:{erase_record.offset}"
    assert {c["change_id"] for c in exits} == {
        change_id("erin-7f3a", d, cause_key, s, None) for d, s in before_members.items()
    }

    # The compacted table ends with a tombstone for erin, and keeps fred.
    members = [r for r in await consume_all(stack, "segments.members")]
    erin = [r for r in members if r.key == b"erin-7f3a"]
    assert erin and erin[-1].value is None and all(r.value is not None for r in erin[:-1])
    assert all(r.value is not None for r in members if r.key == b"fred-91c2")


async def test_a_redelivered_erase_changes_nothing_and_a_new_customer_starts_afresh(
    stack: DevStack, redis_client: Redis
) -> None:
    await produce_all(stack, events_of("gina-0b1d") + events_of("hal-55e0"))
    await produce(stack, "events.profile", [("gina-0b1d", erase_event("gina-0b1d"))])
    async with RunningWorker(settings_for(stack, **QUIET)) as w:
        await w.wait_for(11)
        assert await eventually_nothing_names(redis_client, "gina-0b1d") == []
    after_erase = await population(redis_client)
    changes_after_erase = values(await consume_all(stack, "segments.changes"))

    # The erase is delivered again: the group's offset is set back to it.
    (erase_record,) = [
        r for r in await consume_all(stack, "events.profile") if orjson.loads(r.value)["type"] == "erase"
    ]
    await commit(stack, "segengine", {TopicPartition("events.profile", erase_record.partition): erase_record.offset})
    async with RunningWorker(settings_for(stack, **QUIET)) as w:
        await w.wait_for(1)
        assert await eventually_nothing_names(redis_client, "gina-0b1d") == []
    assert await population(redis_client) == after_erase
    assert values(await consume_all(stack, "segments.changes")) == changes_after_erase
    gina = [r.value for r in await consume_all(stack, "segments.members") if r.key == b"gina-0b1d"]
    assert gina[-2:] == [None, None]  # the tombstone again: the same record, nothing else

    # Later events for the id start a new customer: nothing of the old one comes back.
    again = {
        "event_id": "gina-later",
        "customer_id": "gina-0b1d",
        "type": "purchase",
        "ts": NOW,
        "order_id": "o-new",
        "amount": 5.0,
    }
    await produce(stack, "events.purchase", [("gina-0b1d", again)])
    async with RunningWorker(settings_for(stack, **QUIET)) as w:
        await w.wait_for(1)
    state = CustomerState.loads(await redis_client.hget(KEYS.state("gina-0b1d"), "s"))
    assert (state.orders, state.spend, state.attributes, state.feedback) == (1, 5.0, {}, {})
    fresh = [
        c
        for c in values(await consume_all(stack, "segments.changes"))
        if c["customer_id"] == "gina-0b1d" and c["cause"].get("event_id") == "gina-later"
    ]
    assert fresh and all(c["from"] is None for c in fresh)
    recent = [recent_record(r) for r in recent_entries(await redis_client.hget(KEYS.state("gina-0b1d"), "h"))]
    assert [c["change_id"] for c in recent] == [c["change_id"] for c in reversed(fresh)][
        :HISTORY
    ]  # newest first, none of before


async def test_an_erase_redelivered_before_its_commit_and_a_deletion_left_behind(
    stack: DevStack, redis_client: Redis
) -> None:
    """The pipeline alone, with no commit: the erase is written, delivered again to a worker
    started after the first died (the same records again, nothing changes), then committed by hand as if the worker had died
    right after its commit: a worker's sweep deletes what was left."""
    await produce_all(stack, events_of("ivy-3c4d"))
    await produce(stack, "events.profile", [("ivy-3c4d", erase_event("ivy-3c4d"))])
    records = [
        r
        for topic in ("events.purchase", "events.browse", "events.feedback", "events.profile")
        for r in await consume_all(stack, topic)
    ]
    settings = settings_for(stack)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    await producer.start()
    store = RedisStore(Redis.from_url(stack.redis_url))

    def worker_batches() -> BatchProcessor:
        """A worker's batch logic, as a fresh worker starts it, on this Redis and producer."""
        return BatchProcessor(
            settings,
            load_rules(settings.rules_file),
            store,
            KafkaSink(producer),
            make_clock("wall"),
            Metrics(process=False),
        )

    try:
        processor = worker_batches()
        history, erase = (
            [r for r in records if b'"erase"' not in r.value],
            [r for r in records if b'"erase"' in r.value],
        )
        await processor.process(history)
        populated = await population(redis_client)
        first = await processor.process(erase)
        assert first.applied == 1 and first.changes > 0
        hash_left = await redis_client.hgetall(KEYS.state("ivy-3c4d"))
        assert b"s" not in hash_left and b"o" in hash_left and b"p" in hash_left  # no state: offsets and outbox only
        assert await redis_client.sismember(KEYS.erasing(0), "ivy-3c4d")
        erased = await population(redis_client)
        assert erased != populated and sum(erased.values()) == sum(populated.values()) - first.changes

        sent = values(await consume_all(stack, "segments.changes"))
        restarted = worker_batches()  # the worker died before its commit: another one reads the records again
        again = await restarted.process(history + erase)  # the whole uncommitted stretch, delivered again
        assert (again.applied, again.redelivered, again.changes) == (0, len(history) + 1, 0)
        resent = values(await consume_all(stack, "segments.changes"))[len(sent) :]
        assert any(c["cause"]["kind"] == "erase" for c in resent)
        assert sorted(c["change_id"] for c in resent) == sorted(c["change_id"] for c in sent)  # the same records, again
        assert await population(redis_client) == erased
    finally:
        await producer.stop()
        await store.redis.aclose()

    # Committed, but nobody deleted the erased hash (a worker stopped between the two):
    committed = {TopicPartition(r.topic, r.partition): r.offset + 1 for r in records}
    await commit(stack, "segengine", committed, as_worker=redis_client)
    async with RunningWorker(settings_for(stack, **QUIET)):
        # joining the group, then a sweep's pause: slow on a busy machine
        assert await eventually_nothing_names(redis_client, "ivy-3c4d", timeout=90) == []
    assert not await redis_client.exists(KEYS.erasing(0))
