"""Workers join and leave a consumer group under steady load, as autoscaling and rolling
deploys make them: a worker A runs throughout; B joins, C joins, B leaves, C leaves, B
joins again, C joins again, B leaves, ... all in one process, one group. No worker ever
dies of a rebalance (a revoke while a batch is in flight, a commit refused), and once the
load stops and the group has committed everything, every customer's memberships in Redis
equal the pure fold of its events (tests/integration/oracle.py), every change of that
fold is on segments.changes, with no change of another id, and a change published again
(at-least-once output) always carries the same content.

Event-clock mode keeps the oracle deterministic; the rules (value tier + lifecycle) have
timers, which the due loops of whichever workers own the partitions fire meanwhile. Once
the moves are over, one record at the last event time on every partition shows each
final owner how far time has come (a worker that joined after the load has no other way
to know), and the timers due by then must all fire.

Quick rebalances: a member hears of a rebalance in its next heartbeat response, and the
group waits for every member to rejoin, so the heartbeat interval bounds how long a join
or a leave takes; ``FAST_GROUP`` sets it to 250 ms (session 6 s)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from segengine.datasets import DAY_MS
from segengine.devstack import DevStack
from segengine.events import INPUT_TOPICS
from segengine.rules import load_rules
from segengine.state import CustomerState
from segengine.store_redis import RedisStore
from tests.integration.oracle import events_from_records, fold_all, last_event_time
from tests.integration.support import (
    FAST_GROUP,
    RunningWorker,
    alive,
    at_going_back,
    changes_per_customer,
    consume_all,
    murmur2_partition,
    produce,
    rule_packs,
    settings_for,
    values,
    wait_committed,
    wait_timers_done,
)

log = logging.getLogger(__name__)

GROUP = "segengine-rebalance"
CUSTOMERS = 3000
EVENTS = 12_000
RATE = 400  # events per second: the load lasts about 30 s; enough that a rebalance often meets a batch in flight
T0 = 1_577_880_000_000  # 2020-01-01T12:00:00Z
STEP_MS = 400 * DAY_MS // EVENTS  # event time runs 400 days over the load: timers fire all along
DIMENSIONS = ("lifecycle", "value_tier")
ALL = {TopicPartition(t, p) for t in INPUT_TOPICS for p in range(6)}


def purchase(n: int, customer: str, ts: int, amount: float) -> dict[str, Any]:
    return {
        "event_id": f"rb{n}",
        "customer_id": customer,
        "type": "purchase",
        "ts": ts,
        "order_id": f"o{n}",
        "amount": amount,
    }


async def steady_load(bootstrap: str, sent: list[int]) -> None:
    """EVENTS purchases of CUSTOMERS customers at about RATE per second, in event-time order."""
    rng = random.Random(5)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        acks = []
        for n in range(EVENTS):
            cid = f"rb-{rng.randrange(CUSTOMERS):04d}"
            event = purchase(n, cid, T0 + n * STEP_MS, rng.choice((5.0, 20.0, 45.0, 120.0)))
            acks.append(await producer.send("events.purchase", key=cid.encode(), value=orjson.dumps(event)))
            sent[0] = n + 1
            if n % 20 == 19:
                await asyncio.gather(*acks)
                acks = []
                await asyncio.sleep(max(0.0, started + (n + 1) / RATE - loop.time()))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


def clock_purchases(at: int) -> list[tuple[str, dict[str, Any]]]:
    """One purchase at ``at`` on every partition: whichever worker owns a partition at the end
    (one that joined after the load, too) sees that time, as the next live records would show it."""
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < 6:
        keys.setdefault(murmur2_partition(f"rb-clock-{i}".encode(), 6), f"rb-clock-{i}")
        i += 1
    return [(cid, purchase(EVENTS + k, cid, at, 1.0)) for k, cid in enumerate(keys.values())]


async def balanced(running: list[RunningWorker], timeout: float = 90) -> float:
    """Until the running workers hold every input partition, each some and none twice.
    Returns how long it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        alive(*running)()
        assignments = [w.worker.consumer.assignment() for w in running]
        union = set().union(*assignments)
        if union == ALL and all(assignments) and sum(len(a) for a in assignments) == len(ALL):
            return loop.time() - started
        assert loop.time() - started < timeout, (
            f"no balanced assignment after {timeout} s: {[len(a) for a in assignments]} of {len(ALL)} partitions"
        )
        await asyncio.sleep(0.1)


async def test_workers_joining_and_leaving_under_load_lose_and_double_nothing(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    rules_dir = rule_packs(tmp_path, "value_tier.yaml", "lifecycle.yaml")

    def new_worker() -> RunningWorker:
        w = RunningWorker(
            settings_for(
                stack,
                **FAST_GROUP,
                group_id=GROUP,
                clock="event",
                rules_file=rules_dir,
                timer_interval_ms=50,
                quantiles_refresh_s=0,
                batch_max_records=200,
            )
        )
        return w

    a = new_worker()
    await a.__aenter__()
    running = [a]
    sent = [0]
    load = asyncio.create_task(steady_load(stack.kafka_bootstrap, sent))
    rebalances: list[tuple[str, float]] = []
    try:
        await balanced(running)
        members: dict[str, RunningWorker] = {}
        schedule = ("B joins", "C joins", "B leaves", "C leaves")
        step = 0
        while not load.done() or step < len(schedule):  # each move at least once, and on until the load ends
            await asyncio.sleep(3)
            alive(*running)()
            what = schedule[step % len(schedule)]
            name, move = what.split()
            if move == "joins":
                members[name] = new_worker()
                await members[name].__aenter__()
                running.append(members[name])
            else:
                leaving = members.pop(name)
                running.remove(leaving)
                await leaving.__aexit__(None, None, None)  # a graceful leave; raises what the worker raised
            rebalances.append((what, round(await balanced(running), 1)))
            log.info("%s: balanced in %.1f s, %d events sent", what, rebalances[-1][1], sent[0])
            step += 1
        await load
        assert len(rebalances) >= 4 and sent[0] == EVENTS
        until = T0 + EVENTS * STEP_MS
        await produce(stack, "events.purchase", clock_purchases(until))  # type: ignore[arg-type]
        await wait_committed(stack, GROUP, timeout=180, alive=alive(*running))
        await wait_timers_done(stack, until, timeout=180, alive=alive(*running))
        alive(*running)()
    finally:
        if not load.done():
            load.cancel()
        for w in reversed(running):
            await w.__aexit__(None, None, None)

    records = await consume_all(stack, "events.purchase", timeout=60)
    by_customer = events_from_records(records)
    assert last_event_time(by_customer) == until
    expected = fold_all(load_rules(rules_dir), by_customer, until)

    loaded = await RedisStore(redis_client).load(list(expected))
    got = {cid: {d: CustomerState.loads(loaded[cid].blob).members.get(d) for d in DIMENSIONS} for cid in expected}
    want = {cid: f.memberships(DIMENSIONS) for cid, f in expected.items()}
    wrong = {cid: (got[cid], want[cid]) for cid in want if got[cid] != want[cid]}
    assert not wrong, (
        f"after {rebalances}: {len(wrong)} of {len(want)} customers' memberships (engine, fold) differ, e.g. {list(wrong.items())[:3]}"
    )

    published = values(await consume_all(stack, "segments.changes", timeout=120))
    per_customer, copies_differ = changes_per_customer(published)
    assert not copies_differ, (
        f"{len(copies_differ)} changes published again with other content, e.g. {copies_differ[:2]}"
    )
    want_ids = {c["change_id"]: c for f in expected.values() for c in f.changes}
    got_ids = {c["change_id"] for cs in per_customer.values() for c in cs}
    missing = [want_ids[i] for i in want_ids.keys() - got_ids]
    assert not missing, (
        f"after {rebalances}: {len(missing)} of {len(want_ids)} changes of the fold never published, e.g. {missing[:3]}"
    )
    other = [c for cs in per_customer.values() for c in cs if c["change_id"] not in want_ids]
    assert not other, f"{len(other)} changes published that the fold does not make, e.g. {other[:3]}"
    assert not (back := at_going_back(per_customer)), f"{len(back)} customers' changes go back in time, e.g. {back[:3]}"
    # At-least-once output: a rebalance may publish a change again, always with the same id and
    # content (checked above). How often it happened is worth seeing, not asserting.
    twice = [i for i, n in Counter(c["change_id"] for c in published).items() if n > 1]
    log.info("%d changes published more than once across %d rebalances", len(twice), len(rebalances))
