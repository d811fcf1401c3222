"""One customer whose processing raises is that customer's problem alone.

A customer's stored state is corrupted behind the engine's back (its first purchase time is
not a number: no input can put it there, so it is written straight into Redis). When its
timer falls due (its lifecycle reads that time), the due loop must go on deciding every other customer; the broken
one is quarantined: marked in Redis and shown by the lookup, counted in
``segengine_customers_quarantined``, taken off the timers. Its next events are
dead-lettered with ``processing_error`` while the records beside them apply. An erase
still forgets it, and a new event after that is a fresh customer again, with a timer.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from redis.asyncio import Redis

from segengine.devstack import DevStack
from segengine.inspect import customer_report
from segengine.state import CustomerState
from segengine.store_redis import RedisStore
from tests.integration.support import KEYS, RunningWorker, consume_all, produce, settings_for, values

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400_000
T0 = 1_500_000_000_000
HEALTHY = [f"h{i:02d}" for i in range(20)]
BROKEN = "broken-1"


def purchase(n: str, customer: str, ts: int, amount: float = 20.0) -> dict[str, object]:
    return {
        "event_id": f"p-{n}",
        "customer_id": customer,
        "type": "purchase",
        "ts": ts,
        "order_id": f"o-{n}",
        "amount": amount,
    }


async def wait_until(check, what: str, runner: RunningWorker, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert not runner.task.done(), "the worker stopped"  # type: ignore[union-attr]
        assert asyncio.get_running_loop().time() < deadline, f"not seen in {timeout} s: {what}"
        await asyncio.sleep(0.5)


async def test_a_customer_that_cannot_be_processed_is_quarantined_and_the_rest_goes_on(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    for pack in ("value_tier.yaml", "lifecycle.yaml"):
        shutil.copy(ROOT / "rules" / pack, tmp_path / pack)
    settings = settings_for(
        stack, clock="event", rules_file=tmp_path, timer_interval_ms=50, quantiles_refresh_s=0, rules_reload_s=0
    )
    await produce(stack, "events.purchase", [(c, purchase(c, c, T0)) for c in [*HEALTHY, BROKEN]])
    async with RunningWorker(settings) as runner:
        await runner.wait_for(len(HEALTHY) + 1)
        # corrupt the broken customer's state (its timer, new -> active at T0 + 30 days, stays)
        broken = CustomerState.loads(await redis_client.hget(KEYS.state(BROKEN), "s"))
        broken.first_purchase = "not a time"  # type: ignore[assignment]
        await redis_client.hset(KEYS.state(BROKEN), "s", broken.dumps())
        home = broken.home
        assert await redis_client.zscore(KEYS.timers(0, home), BROKEN) is not None

        # time moves on (another customer's event): every timer up to T0 + 100 days falls due
        await produce(stack, "events.purchase", [("zz-clock", purchase("clock", "zz-clock", T0 + 100 * DAY))])

        async def healthy_at_risk() -> bool:
            moves = [
                c
                for c in values(await consume_all(stack, "segments.changes"))
                if c["dimension"] == "lifecycle" and c["to"] == "at_risk"
            ]
            return {c["customer_id"] for c in moves} >= set(HEALTHY)

        await wait_until(healthy_at_risk, "every healthy customer at_risk, by the due loop", runner)

        async def quarantined() -> bool:
            return await redis_client.hget(KEYS.state(BROKEN), "q") == b"timer"

        await wait_until(quarantined, "the broken customer quarantined", runner)
        assert (
            await redis_client.zscore(KEYS.timers(0, home), BROKEN) is None
        )  # off the timers: not taken again and again
        counted = runner.worker.metrics.registry.get_sample_value(
            "segengine_customers_quarantined_total", {"stage": "timer"}
        )
        assert counted is not None and counted >= 1
        report = await customer_report(RedisStore(redis_client), runner.worker.rules, BROKEN, T0 + 100 * DAY)
        assert report is not None and report["quarantined"] == "timer"
        broken_moves = [c for c in values(await consume_all(stack, "segments.changes")) if c["customer_id"] == BROKEN]
        assert [(c["from"], c["to"]) for c in broken_moves if c["dimension"] == "lifecycle"] == [(None, "new")]

        # its next event is dead-lettered; the records beside it apply
        done = runner.records
        await produce(
            stack, "events.purchase",
            [(BROKEN, purchase("b2", BROKEN, T0 + 101 * DAY)), (HEALTHY[0], purchase("h2", HEALTHY[0], T0 + 101 * DAY))],
        )  # fmt: skip
        await runner.wait_for(done + 2)
        dead = values(await consume_all(stack, "events.dlq"))
        assert [(d["error"]["code"], d["key"]) for d in dead] == [("processing_error", BROKEN)]
        healthy = CustomerState.loads(await redis_client.hget(KEYS.state(HEALTHY[0]), "s"))
        assert healthy.orders == 2 and healthy.members["lifecycle"] == "reactivated"

        # an erase forgets it all the same; a new purchase starts a fresh customer, with a timer
        done = runner.records
        await produce(
            stack,
            "events.profile",
            [(BROKEN, {"event_id": "erase-b", "customer_id": BROKEN, "type": "erase", "ts": T0 + 102 * DAY})],
        )
        await runner.wait_for(done + 1)
        await produce(stack, "events.purchase", [(BROKEN, purchase("b3", BROKEN, T0 + 103 * DAY))])

        async def fresh() -> bool:
            raw = await redis_client.hget(KEYS.state(BROKEN), "s")
            return raw is not None and CustomerState.loads(raw).orders == 1

        await wait_until(fresh, "the erased customer back as a new one", runner)
        assert await redis_client.hget(KEYS.state(BROKEN), "q") is None
        fresh_home = CustomerState.loads(await redis_client.hget(KEYS.state(BROKEN), "s")).home
        assert await redis_client.zscore(KEYS.timers(0, fresh_home), BROKEN) is not None
        assert not runner.task.done()
