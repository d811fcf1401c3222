"""Time alone moves customers: with no new event, a customer goes active -> at_risk ->
churned, drops a value tier when a big purchase leaves the 365-day window, and loses a
loyalty tier only once its grace period is over, each exactly at the due time, by the
timer loop, with cause.kind = timer. The clock is the event-time watermark, moved forward
by another customer's events. Live, the due-time lag is measured.

A worker killed after writing timers' decisions and before publishing them: after a
restart every one of those decisions is published, at once (a decision's outbox keeps its
customer due until published; an event for the customer sends it first), with the
change_id it was written with. Output is at-least-once: a change decided before the crash
may be published again, always with the same change_id and identical content; nothing is
missing; a change decided after the restart (no crash since) is published once; per
customer, changes come in decision order and their ``at`` never decreases."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from redis.asyncio import Redis

from segengine.devstack import DevStack
from segengine.evaluate import change_id, rfc3339
from segengine.state import CustomerState
from segengine.store_redis import RedisStore
from tests.integration.support import (
    KEYS,
    RunningWorker,
    at_going_back,
    changes_per_customer,
    consume_all,
    faulty_worker,
    produce,
    rule_packs,
    settings_for,
    values,
    wait_committed,
)

DAY = 86_400_000
T = (int(time.time() * 1000) // DAY - 1) * DAY
T0 = T - 400 * DAY


def browse(n: int, customer: str, ts: int) -> dict[str, object]:
    return {"event_id": f"tick{n}", "customer_id": customer, "type": "browse", "ts": ts, "action": "view"}


def purchase(n: int, customer: str, ts: int, amount: float) -> dict[str, object]:
    return {
        "event_id": f"buy{n}",
        "customer_id": customer,
        "type": "purchase",
        "ts": ts,
        "order_id": f"o{n}",
        "amount": amount,
    }


async def dimension_moves(stack: DevStack, customer: str, dimension: str = "lifecycle") -> list[dict[str, object]]:
    return [
        c
        for c in values(await consume_all(stack, "segments.changes"))
        if c["customer_id"] == customer and c["dimension"] == dimension
    ]


async def wait_for_moves(
    stack: DevStack, customer: str, count: int, timeout: float = 20, dimension: str = "lifecycle"
) -> list[dict[str, object]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        moves = await dimension_moves(stack, customer, dimension)
        if len(moves) >= count or asyncio.get_running_loop().time() > deadline:
            return moves
        await asyncio.sleep(0.2)


async def test_a_silent_customer_moves_at_the_exact_due_times(stack: DevStack) -> None:
    purchase = {
        "event_id": "p1",
        "customer_id": "sleepy",
        "type": "purchase",
        "ts": T0,
        "order_id": "o1",
        "amount": 30.0,
    }
    await produce(stack, "events.purchase", [("sleepy", purchase)])
    async with RunningWorker(settings_for(stack, clock="event", timer_interval_ms=50)) as w:
        await w.wait_for(1)
        await produce(
            stack, "events.browse", [("clock", browse(1, "clock", T0 + 61 * DAY))]
        )  # the watermark passes day 30 and day 60
        moves = await wait_for_moves(stack, "sleepy", 3)
        assert [(m["from"], m["to"]) for m in moves] == [(None, "new"), ("new", "active"), ("active", "at_risk")]
        await produce(stack, "events.browse", [("clock", browse(2, "clock", T0 + 200 * DAY))])  # ... and day 180
        moves = await wait_for_moves(stack, "sleepy", 4)
    assert [(m["from"], m["to"]) for m in moves] == [
        (None, "new"),
        ("new", "active"),
        ("active", "at_risk"),
        ("at_risk", "churned"),
    ]
    assert [m["cause"]["kind"] for m in moves] == ["event", "timer", "timer", "timer"]
    # exactly when the thresholds were crossed (1 ms past 30, 60 and 180 days), not when the clock moved
    assert [m["at"] for m in moves[1:]] == [rfc3339(T0 + d * DAY + 1) for d in (30, 60, 180)]
    assert len({m["change_id"] for m in moves}) == 4


async def next_due(redis: Redis, customer: str) -> int | None:
    """The customer's next check, from whichever partition's timer set holds it."""
    for partition in range(6):
        score = await redis.zscore(KEYS.timers(0, partition), customer)
        if score is not None:
            return int(score)
    return None


async def wait_for_due(redis: Redis, customer: str, due: int, timeout: float = 20) -> None:
    """Until the timer loop has fired every earlier check of the customer and the next one is ``due``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await next_due(redis, customer)) != due:
        assert asyncio.get_running_loop().time() < deadline, f"next check of {customer} is {got}, expected {due}"
        await asyncio.sleep(0.05)


T1 = T - 520 * DAY


async def test_a_value_tier_drops_when_the_big_purchase_leaves_the_365_day_window(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    # spend_365d 300 then 400 (A), then 100 once the 300 is out of the window (B), then nothing (C)
    await produce(
        stack,
        "events.purchase",
        [("whale", purchase(1, "whale", T1, 300.0)), ("whale", purchase(2, "whale", T1 + 100 * DAY, 100.0))],
    )
    settings = settings_for(
        stack,
        clock="event",
        timer_interval_ms=50,
        rules_file=rule_packs(tmp_path, "value_tier.yaml"),
        quantiles_refresh_s=0,
    )
    async with RunningWorker(settings) as w:
        await w.wait_for(2)
        await produce(
            stack, "events.browse", [("clock", browse(1, "clock", T1 + 365 * DAY - 1))]
        )  # 1 ms short of the window's end
        await wait_for_due(
            redis_client, "whale", T1 + 365 * DAY
        )  # the checks at 7, 30, 90 ... days fired, and changed nothing
        assert [(m["from"], m["to"]) for m in await dimension_moves(stack, "whale", "value_tier")] == [(None, "A")]
        await produce(stack, "events.browse", [("clock", browse(2, "clock", T1 + 466 * DAY))])
        moves = await wait_for_moves(stack, "whale", 3, dimension="value_tier")
    assert [(m["from"], m["to"]) for m in moves] == [(None, "A"), ("A", "B"), ("B", "C")]
    assert [m["cause"]["kind"] for m in moves] == ["event", "timer", "timer"]
    assert [m["at"] for m in moves] == [rfc3339(T1), rfc3339(T1 + 365 * DAY), rfc3339(T1 + 465 * DAY)]
    assert moves[1]["features"] == {"orders_365d": 1, "spend_365d": 100.0}


async def test_a_loyalty_demotion_waits_for_its_grace_period(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    # points = spend_365d: 1700 (gold); 500 once the 1200 is out of the window, below gold's stay (800):
    # demoted to silver only 30 days later; 0 once the 500 is out too: bronze 30 days after that.
    await produce(
        stack,
        "events.purchase",
        [("goldie", purchase(1, "goldie", T1, 1200.0)), ("goldie", purchase(2, "goldie", T1 + 100 * DAY, 500.0))],
    )
    settings = settings_for(
        stack,
        clock="event",
        timer_interval_ms=50,
        rules_file=rule_packs(tmp_path, "loyalty.yaml"),
        quantiles_refresh_s=0,
    )
    async with RunningWorker(settings) as w:
        await w.wait_for(2)
        await produce(
            stack, "events.browse", [("clock", browse(1, "clock", T1 + 395 * DAY - 1))]
        )  # 1 ms short of the grace's end
        await wait_for_due(redis_client, "goldie", T1 + 395 * DAY)
        assert [(m["from"], m["to"]) for m in await dimension_moves(stack, "goldie", "loyalty")] == [(None, "gold")]
        state = CustomerState.loads((await RedisStore(redis_client).load_state("goldie")).blob)
        assert (state.members["loyalty"], state.grace_since["loyalty"]) == (
            "gold",
            T1 + 365 * DAY,
        )  # grace from the window's end
        await produce(stack, "events.browse", [("clock", browse(2, "clock", T1 + 500 * DAY))])
        moves = await wait_for_moves(stack, "goldie", 3, dimension="loyalty")
    assert [(m["from"], m["to"]) for m in moves] == [(None, "gold"), ("gold", "silver"), ("silver", "bronze")]
    assert [m["cause"]["kind"] for m in moves] == ["event", "timer", "timer"]
    assert [m["at"] for m in moves] == [rfc3339(T1), rfc3339(T1 + 395 * DAY), rfc3339(T1 + 495 * DAY)]


async def test_live_a_timer_fires_at_its_due_time_on_the_wall_clock_and_its_lag_is_measured(
    stack: DevStack, tmp_path: Path
) -> None:
    settings = settings_for(
        stack,
        clock="wall",
        timer_interval_ms=50,
        rules_file=rule_packs(tmp_path, "lifecycle.yaml"),
        quantiles_refresh_s=0,
    )
    async with RunningWorker(settings) as w:
        await produce(stack, "events.browse", [("clock", browse(1, "clock", int(time.time() * 1000)))])
        await w.wait_for(1)  # the worker is consuming
        due = int(time.time() * 1000) + 2000  # 60 days and 1 ms after the purchase: at_risk, 2 s from now
        await produce(stack, "events.purchase", [("live", purchase(1, "live", due - 60 * DAY - 1, 20.0))])
        moves = await wait_for_moves(stack, "live", 2)
        lag = w.worker.metrics.registry.get_sample_value("segengine_timer_lag_seconds_count")
    assert [(m["from"], m["to"], m["cause"]["kind"]) for m in moves] == [
        (None, "active", "event"),
        ("active", "at_risk", "timer"),
    ]
    assert moves[1]["at"] == rfc3339(due)
    assert lag is not None and lag >= 1, "the due-time lag is observed on the live clock"


KILLED = [f"k{i:02d}" for i in range(60)]
GROUP = "segengine"  # the worker's default group: the killed process and the restarted worker share it


def first_check(i: int) -> int:
    """When customer KILLED[i] (one purchase) turns from new to active: 30 days and 1 ms later."""
    return T0 + i * 60_000 + 30 * DAY + 1


async def kill_while_timers_fire(stack: DevStack, redis_client: Redis, rules: Path) -> dict[str, list[str]]:
    """Sixty customers' first purchases and a clock event that makes their new -> active due;
    a worker (its own process) SIGKILLed right after writing the first due timers' decisions,
    before publishing them. Returns the timer change_ids held in the outbox of each customer written."""
    await produce(stack, "events.purchase", [(c, purchase(i, c, T0 + i * 60_000, 20.0)) for i, c in enumerate(KILLED)])
    await produce(stack, "events.browse", [("clock", browse(1, "clock", T0 + 31 * DAY))])
    env = {**os.environ, "SEGENGINE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "SEGENGINE_REDIS_URL": stack.redis_url,
           "SEGENGINE_CLOCK": "event", "SEGENGINE_RULES_FILE": str(rules),
           "SEGENGINE_TIMER_INTERVAL_MS": "50", "SEGENGINE_QUANTILES_REFRESH_S": "0"}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *faulty_worker("kill_after_timer_save"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        code = await asyncio.wait_for(proc.wait(), 180)  # a slow machine: start, join, consume, fire
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == -signal.SIGKILL, (
        f"the worker process ended with {code}, not by the SIGKILL after its first timers' decisions"
    )
    published = [c for c in values(await consume_all(stack, "segments.changes")) if c["customer_id"] in KILLED]
    assert not [c for c in published if c["cause"]["kind"] == "timer"], (
        "nothing a timer decided was published before the kill"
    )
    loaded = await RedisStore(redis_client).load(KILLED)
    held = {
        c: [o.value["change_id"] for o in CustomerState.loads(None, loaded[c].outbox).pending if o.topic == "segments.changes" and o.value and o.value["cause"]["kind"] == "timer"]
        for c in KILLED if CustomerState.loads(loaded[c].blob).members.get("lifecycle") == "active"
    }  # fmt: skip
    assert held and all(len(ids) == 1 for ids in held.values()), (
        "the killed worker had written some timers' decisions, with their outbox"
    )
    return held


def expected_timer_changes(customer: str) -> list[tuple[object, ...]]:
    i = KILLED.index(customer)
    return [
        (
            "new",
            "active",
            rfc3339(first_check(i)),
            change_id(customer, "lifecycle", f"timer:{first_check(i)}", "new", "active"),
        ),
        (
            "active",
            "at_risk",
            rfc3339(first_check(i) + 30 * DAY),
            change_id(customer, "lifecycle", f"timer:{first_check(i) + 30 * DAY}", "active", "at_risk"),
        ),
    ]


async def settled(
    stack: DevStack, redis: Redis, want: set[str], clock: int, timeout: float = 180
) -> list[dict[str, object]]:
    """Until every change_id in ``want`` is on segments.changes, the group committed every
    input record and no KILLED customer is due at or before ``clock`` (nothing left in
    flight); then the KILLED customers' changes as published, copies included, in order."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout  # the restarted worker first waits out the killed one's session
    while True:
        changes = [
            c for c in values(await consume_all(stack, "segments.changes", timeout=60)) if c["customer_id"] in KILLED
        ]
        missing = want - {str(c["change_id"]) for c in changes}
        due = [k for k in KILLED if (d := await next_due(redis, k)) is not None and d <= clock]
        if not missing and not due:
            break
        assert loop.time() < deadline, (
            f"after {timeout} s, {len(missing)} of {len(want)} expected changes not published; {len(due)} customers still due"
        )
        await asyncio.sleep(0.25)
    await wait_committed(stack, GROUP, timeout=timeout)
    return [c for c in values(await consume_all(stack, "segments.changes", timeout=60)) if c["customer_id"] in KILLED]


def at_least_once_problems(changes: list[dict[str, object]]) -> tuple[dict[str, list[dict[str, object]]], list[str]]:
    """The guarantee after a crash: a change may come again, always with its change_id and
    identical content; per customer, the changes (each counted at its first appearance) come
    in decision order and their ``at`` never decreases. Returns them per customer, and what breaks it."""
    per_customer, problems = changes_per_customer(changes)  # type: ignore[arg-type]
    problems += at_going_back(per_customer)  # type: ignore[arg-type]
    return per_customer, problems  # type: ignore[return-value]


async def test_timers_due_when_the_worker_is_killed_are_published_after_a_restart_with_their_ids(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    rules = rule_packs(tmp_path, "lifecycle.yaml")
    held = await kill_while_timers_fire(stack, redis_client, rules)
    await produce(
        stack, "events.browse", [("clock", browse(2, "clock", T0 + 62 * DAY))]
    )  # time moves on: at_risk is due too
    want = {str(ids[3]) for k in KILLED for ids in expected_timer_changes(k)}
    async with RunningWorker(
        settings_for(stack, clock="event", timer_interval_ms=50, rules_file=rules, quantiles_refresh_s=0)
    ):
        changes = await settled(stack, redis_client, want, T0 + 62 * DAY)
    per_customer, problems = at_least_once_problems(changes)
    assert not problems, f"at-least-once with stable ids, in decision order: {problems[:3]}"
    for customer in KILLED:
        mine = per_customer[customer]
        assert [(c["from"], c["to"]) for c in mine] == [(None, "new"), ("new", "active"), ("active", "at_risk")], (
            f"{customer}: in decision order"
        )
        timer = [(c["from"], c["to"], c["at"], c["change_id"]) for c in mine if c["cause"]["kind"] == "timer"]  # type: ignore[index]
        assert timer == expected_timer_changes(customer), (
            f"{customer}: each timer transition, decided at its due time, with its id"
        )
        # decided by the restarted worker, which did not crash: published once
        at_risk = [c for c in changes if c["customer_id"] == customer and c["to"] == "at_risk"]
        assert len(at_risk) == 1, (
            f"{customer}: a change decided after the restart, with no crash since, published {len(at_risk)} times"
        )
    for customer, ids in held.items():  # the decision written before the kill is the one published
        assert ids == [expected_timer_changes(customer)[0][3]]


async def test_timers_due_when_the_worker_is_killed_are_published_at_once_after_a_restart(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    rules = rule_packs(tmp_path, "lifecycle.yaml")
    held = await kill_while_timers_fire(stack, redis_client, rules)
    victim = sorted(held)[0]  # its next event comes before the restarted due loop looks at it
    await produce(stack, "events.purchase", [(victim, purchase(999, victim, T0 + 31 * DAY + 1, 5.0))])
    await produce(
        stack, "events.browse", [("clock", browse(2, "clock", T0 + 31 * DAY + 1))]
    )  # the clock where it was: nothing new falls due
    want = {str(expected_timer_changes(k)[0][3]) for k in KILLED}
    async with RunningWorker(
        settings_for(stack, clock="event", timer_interval_ms=50, rules_file=rules, quantiles_refresh_s=0)
    ):
        changes = await settled(stack, redis_client, want, T0 + 31 * DAY + 1)
    per_customer, problems = at_least_once_problems(changes)
    assert not problems, f"at-least-once with stable ids, in decision order: {problems[:3]}"
    active = {
        (str(c["customer_id"]), str(c["change_id"])) for cs in per_customer.values() for c in cs if c["to"] == "active"
    }
    assert sorted(active) == sorted((k, str(expected_timer_changes(k)[0][3])) for k in KILLED), (
        "every new -> active due before the kill, each with its id, and no other"
    )
    for customer in KILLED:
        assert [(c["from"], c["to"]) for c in per_customer[customer]] == [(None, "new"), ("new", "active")], (
            f"{customer}: in decision order"
        )
