"""Producers the engine did not write: librdkafka clients (confluent-kafka-python and
most non-JVM clients) partition keys with CRC32 by default, not the JVM's murmur2, and
one upstream system may use one partitioner while another uses the other. The contract
promises the same results whatever the partitioner; only locality may differ.

All of CDNOW from a confluent-kafka producer, then two input topics produced with
different partitioners for the same customers: the memberships at the last event time
equal a pure fold of the same events (tests/integration/oracle.py), every published
transition chain is consistent with them, and with no crash nothing is published twice."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from segengine.datasets import CDNOW_PURCHASES, DAY_MS, HOUR_MS, iter_purchase_events, read_cdnow
from segengine.devstack import DevStack
from segengine.rules import load_rules
from segengine.state import CustomerState
from segengine.store_redis import RedisStore
from tests.integration.oracle import events_from_records, fold_all, last_event_time
from tests.integration.support import (
    RunningWorker,
    alive,
    at_going_back,
    changes_per_customer,
    consume_all,
    murmur2_partition,
    produce,
    produce_with_librdkafka,
    rule_packs,
    settings_for,
    values,
    wait_timers_done,
)

CORE = ("value_tier.yaml", "lifecycle.yaml")


def chain_problems(per_customer: dict[str, list[dict[str, Any]]], final: dict[str, dict[str, str | None]]) -> list[str]:
    """Per customer and dimension, the published transitions must chain (each ``from`` the
    previous ``to``, the first from nothing) and end in the final membership: a lost or a
    doubled transition breaks the chain."""
    problems = []
    for cid, want in final.items():
        for dimension, segment in want.items():
            moves = [(c["from"], c["to"]) for c in per_customer.get(cid, []) if c["dimension"] == dimension]
            current = None
            for old, new in moves:
                if old != current:
                    problems.append(f"{cid} {dimension}: {moves} does not chain")
                    break
                current = new
            else:
                if current != segment:
                    problems.append(
                        f"{cid} {dimension}: published changes end in {current!r}, the fold in {segment!r}: {moves}"
                    )
    return problems


async def engine_memberships(
    redis: Redis, customers: list[str], dimensions: tuple[str, ...]
) -> dict[str, dict[str, str | None]]:
    loaded = await RedisStore(redis).load(customers)
    out = {}
    for cid in customers:
        members = CustomerState.loads(loaded[cid].blob).members
        out[cid] = {d: members.get(d) for d in dimensions}
    return out


async def test_cdnow_from_a_librdkafka_producer_ends_in_the_pure_fold_segments(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    events = [ev for _, ev in iter_purchase_events(read_cdnow())]
    await asyncio.to_thread(
        produce_with_librdkafka, stack, "events.purchase", [(str(ev["customer_id"]), ev) for ev in events]
    )
    records = await consume_all(stack, "events.purchase", expect=CDNOW_PURCHASES, timeout=120)
    assert len(records) == CDNOW_PURCHASES
    moved = sum(1 for r in records if r.partition != murmur2_partition(r.key, 6))
    assert moved > CDNOW_PURCHASES // 2, (
        f"only {moved} records are off their murmur2 partition: the producer did not use CRC32"
    )

    rules_dir = rule_packs(tmp_path, *CORE)
    by_customer = events_from_records(records)
    until = last_event_time(by_customer)
    settings = settings_for(stack, clock="event", rules_file=rules_dir, quantiles_refresh_s=0, timer_interval_ms=50)
    async with RunningWorker(settings) as w:
        await w.wait_for(CDNOW_PURCHASES, timeout=360)
        await wait_timers_done(stack, until, timeout=240, alive=alive(w))  # time catches up to the last event
        assert not w.task.done()  # type: ignore[union-attr]

    expected = fold_all(load_rules(rules_dir), by_customer, until)
    dimensions = ("lifecycle", "value_tier")
    want = {cid: f.memberships(dimensions) for cid, f in expected.items()}
    got = await engine_memberships(redis_client, list(want), dimensions)
    wrong = {cid: (got[cid], want[cid]) for cid in want if got[cid] != want[cid]}
    assert not wrong, (
        f"{len(wrong)} of {len(want)} customers end in other segments than the pure fold at the last event time "
        f"(engine, fold), e.g. {list(wrong.items())[:3]}"
    )

    published = values(await consume_all(stack, "segments.changes", timeout=120))
    twice = {cid: n for cid, n in Counter(c["change_id"] for c in published).items() if n > 1}
    assert not twice, f"{len(twice)} change_ids published more than once with no crash, e.g. {list(twice.items())[:3]}"
    per_customer, _ = changes_per_customer(published)
    assert not (problems := chain_problems(per_customer, want)), f"{len(problems)} customers, e.g. {problems[:3]}"
    assert not (back := at_going_back(per_customer)), f"{len(back)} customers' changes go back in time, e.g. {back[:3]}"


T0 = 1_577_880_000_000  # 2020-01-01T12:00:00Z


def two_topic_events(customers: int = 300, seed: int = 11) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(purchases, browses) for the same customers over about 14 months, in event-time order:
    visits weeks or months apart (new, active, at_risk, churned, reactivated), each some
    browsing (views, add-to-cart, checkout started) and, often, a purchase an hour later."""
    rng = random.Random(seed)
    purchases: list[dict[str, Any]] = []
    browses: list[dict[str, Any]] = []
    n = 0
    for i in range(customers):
        cid = f"dual-{i:04d}"
        ts = T0 + rng.randint(0, 60) * DAY_MS + rng.randint(0, 23) * HOUR_MS
        for _ in range(rng.randint(1, 6)):
            for action in rng.choice(
                (["view"], ["view", "view", "add_to_cart"], ["view", "add_to_cart", "checkout_start"], [])
            ):
                n += 1
                ts += rng.randint(1, 50) * 60_000
                browses.append(
                    {
                        "event_id": f"b{n}",
                        "customer_id": cid,
                        "type": "browse",
                        "ts": ts,
                        "action": action,
                        "category": "rock",
                    }
                )
            if rng.random() < 0.7:
                n += 1
                ts += HOUR_MS
                purchases.append(
                    {
                        "event_id": f"p{n}",
                        "customer_id": cid,
                        "type": "purchase",
                        "ts": ts,
                        "order_id": f"o{n}",
                        "amount": rng.choice((9.99, 25.0, 80.0, 300.0)),
                    }
                )
            ts += rng.choice((2, 10, 45, 75, 200)) * DAY_MS
            if ts > T0 + 420 * DAY_MS:
                break
    return sorted(purchases, key=lambda e: e["ts"]), sorted(browses, key=lambda e: e["ts"])


async def test_two_topics_with_different_partitioners_end_in_the_pure_fold_segments(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    purchases, browses = two_topic_events()
    await asyncio.to_thread(
        produce_with_librdkafka, stack, "events.purchase", [(str(e["customer_id"]), e) for e in purchases]
    )  # CRC32
    await produce(stack, "events.browse", [(str(e["customer_id"]), e) for e in browses])  # murmur2
    records = await consume_all(stack, "events.purchase", expect=len(purchases), timeout=60)
    records += await consume_all(stack, "events.browse", expect=len(browses), timeout=60)
    assert len(records) == len(purchases) + len(browses)
    partitions: dict[str, set[tuple[str, int]]] = {}
    for r in records:
        partitions.setdefault(r.key.decode(), set()).add((r.topic, r.partition))
    split = [cid for cid, tps in partitions.items() if len({p for _, p in tps}) > 1]
    assert len(split) > len(partitions) // 2, f"only {len(split)} customers have their topics on different partitions"

    rules_dir = rule_packs(tmp_path, *CORE, "intent.yaml")
    by_customer = events_from_records(records)
    until = last_event_time(by_customer)
    settings = settings_for(
        stack, clock="event", rules_file=rules_dir, quantiles_refresh_s=0, timer_interval_ms=50, batch_max_records=200
    )
    async with RunningWorker(settings) as w:
        await w.wait_for(len(records), timeout=180)
        await wait_timers_done(stack, until, timeout=180, alive=alive(w))
        assert not w.task.done()  # type: ignore[union-attr]

    expected = fold_all(load_rules(rules_dir), by_customer, until)
    dimensions = ("lifecycle", "value_tier", "intent")
    want = {cid: f.memberships(dimensions) for cid, f in expected.items()}
    got = await engine_memberships(redis_client, list(want), dimensions)
    wrong = {cid: (got[cid], want[cid]) for cid in want if got[cid] != want[cid]}
    assert not wrong, (
        f"{len(wrong)} of {len(want)} customers end in other segments than the pure fold (engine, fold), e.g. {list(wrong.items())[:3]}"
    )

    published = values(await consume_all(stack, "segments.changes", timeout=60))
    twice = {cid: n for cid, n in Counter(c["change_id"] for c in published).items() if n > 1}
    assert not twice, f"{len(twice)} change_ids published more than once with no crash, e.g. {list(twice.items())[:3]}"
    per_customer, _ = changes_per_customer(published)
    # a timer decided twice (a customer due in two partitions' timer sets) or never shows here
    assert not (problems := chain_problems(per_customer, want)), (
        f"{len(problems)} customer dimensions, e.g. {problems[:3]}"
    )
    timer_moves = Counter(
        (c["customer_id"], c["dimension"], c["at"])
        for cs in per_customer.values()
        for c in cs
        if c["cause"]["kind"] == "timer"
    )
    assert not (doubled := [k for k, n in timer_moves.items() if n > 1]), (
        f"timer transitions decided twice, e.g. {doubled[:3]}"
    )
    assert not (back := at_going_back(per_customer)), f"{len(back)} customers' changes go back in time, e.g. {back[:3]}"
