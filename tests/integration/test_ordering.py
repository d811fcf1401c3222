"""Per customer, output appears in decision order, whoever decided (an event batch or the
due loop), even when publishing is slow.

A slow sink (publish latency injected in front of the real Kafka producer) keeps several
event batches in flight while the due loop decides customers whose timers fell due from
the state those batches wrote. Each timer decision must still be published after the
event decision before it: on ``segments.changes`` every customer's lifecycle records
form one chain (``from`` = the previous ``to``) with ``at`` never going back, and the last
``segments.members`` record of each customer is what Redis holds.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path

import orjson
from redis.asyncio import Redis

from segengine.devstack import DevStack
from segengine.state import CustomerState
from tests.integration.support import KEYS, RunningWorker, consume_all, produce, settings_for, values

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400_000
T0 = 1_500_000_000_000
CUSTOMERS = 400
CHAIN = [None, "new", "active", "at_risk", "churned"]  # a silent customer's lifecycle, event then timers


class SlowSink:
    """The real sink, reached after a random delay: batches pile up in flight."""

    def __init__(self, inner: object, seed: int = 7) -> None:
        self.inner = inner
        self.random = random.Random(seed)
        self.publishes = 0

    async def publish(self, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
        self.publishes += 1
        await asyncio.sleep(self.random.uniform(0.05, 0.3))
        await self.inner.publish(records)  # type: ignore[attr-defined]


def purchase(i: int) -> dict[str, object]:
    # Two days apart: while customer i is still in flight, the watermark has moved past the
    # timers of customers 30 records before it.
    return {
        "event_id": f"p{i}",
        "customer_id": f"c{i:03d}",
        "type": "purchase",
        "ts": T0 + i * 2 * DAY,
        "order_id": f"o{i}",
        "amount": 20.0,
    }


async def test_timer_changes_never_overtake_the_event_change_before_them(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    shutil.copy(ROOT / "rules" / "lifecycle.yaml", tmp_path / "lifecycle.yaml")
    events = [purchase(i) for i in range(CUSTOMERS)]
    # one last customer far ahead: the watermark passes every churn due time
    events.append({**purchase(CUSTOMERS), "customer_id": "zz-last", "ts": T0 + (2 * CUSTOMERS + 200) * DAY})
    await produce(stack, "events.purchase", [(e["customer_id"], e) for e in events])  # type: ignore[misc]
    settings = settings_for(
        stack,
        clock="event",
        rules_file=tmp_path,
        batch_max_records=25,
        timer_interval_ms=20,
        quantiles_refresh_s=0,
        rules_reload_s=0,
    )
    runner = RunningWorker(settings)
    sink = runner.worker.processor.sink = SlowSink(runner.worker.processor.sink)
    expected = CUSTOMERS * (len(CHAIN) - 1) + 1  # every chain, and the last customer's entry
    async with runner:
        await runner.wait_for(len(events), timeout=240)
        changes: list[dict[str, object]] = []
        deadline = asyncio.get_running_loop().time() + 240
        while len(changes) < expected:
            assert not runner.task.done(), "the worker stopped"  # type: ignore[union-attr]
            assert asyncio.get_running_loop().time() < deadline, (
                f"{len(changes)} of {expected} changes published in time"
            )
            await asyncio.sleep(1)
            changes = values(await consume_all(stack, "segments.changes", timeout=60))
    assert sink.publishes > 10  # many publishes were in flight, slowly

    by_customer: dict[str, list[dict[str, object]]] = {}
    for change in changes:  # one partition per customer: partition order is publish order
        by_customer.setdefault(str(change["customer_id"]), []).append(change)
    timer_moves = 0
    for customer, moves in by_customer.items():
        if customer == "zz-last":
            continue
        chain = [(m["from"], m["to"]) for m in moves]
        assert chain == list(zip(CHAIN, CHAIN[1:])), f"{customer}: lifecycle records out of decision order: {chain}"
        ats = [str(m["at"]) for m in moves]
        assert ats == sorted(ats), f"{customer}: decision times go back: {ats}"
        timer_moves += sum(1 for m in moves if m["cause"]["kind"] == "timer")  # type: ignore[index]
    assert timer_moves == CUSTOMERS * 3  # new -> active -> at_risk -> churned: decided by the due loop (or caught up)

    members: dict[str, dict[str, object]] = {}
    for record in await consume_all(stack, "segments.members", timeout=60):
        members[record.key.decode()] = orjson.loads(record.value)  # the last one per customer wins, as compaction keeps
    for customer in by_customer:
        stored = CustomerState.loads(await redis_client.hget(KEYS.state(customer), "s"))
        assert members[customer]["memberships"] == stored.members, (
            f"{customer}: the members table is not what Redis holds"
        )
