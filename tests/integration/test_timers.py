"""Time alone moves customers: with no new event, a customer goes active -> at_risk ->
churned exactly at the due times, by the timer loop, with cause.kind = timer. The clock
is the event-time watermark, moved forward by other customers' events."""

from __future__ import annotations

import asyncio
import time

from engine.devstack import DevStack
from engine.evaluate import rfc3339
from tests.integration.support import RunningWorker, consume_all, produce, settings_for, values

DAY = 86_400_000
T = (int(time.time() * 1000) // DAY - 1) * DAY
T0 = T - 400 * DAY


def browse(n: int, customer: str, ts: int) -> dict[str, object]:
    return {"event_id": f"tick{n}", "customer_id": customer, "type": "browse", "ts": ts, "action": "view"}


async def lifecycle_moves(stack: DevStack, customer: str) -> list[dict[str, object]]:
    return [c for c in values(await consume_all(stack, "segments.changes")) if c["customer_id"] == customer and c["dimension"] == "lifecycle"]


async def wait_for_moves(stack: DevStack, customer: str, count: int, timeout: float = 20) -> list[dict[str, object]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        moves = await lifecycle_moves(stack, customer)
        if len(moves) >= count or asyncio.get_running_loop().time() > deadline:
            return moves
        await asyncio.sleep(0.2)


async def test_a_silent_customer_moves_at_the_exact_due_times(stack: DevStack) -> None:
    purchase = {"event_id": "p1", "customer_id": "sleepy", "type": "purchase", "ts": T0, "order_id": "o1", "amount": 30.0}
    await produce(stack, "events.purchase", [("sleepy", purchase)])
    async with RunningWorker(settings_for(stack, clock="event", timer_interval_ms=50)) as w:
        await w.wait_for(1)
        await produce(stack, "events.browse", [("clock", browse(1, "clock", T0 + 61 * DAY))])  # the watermark passes day 30 and day 60
        moves = await wait_for_moves(stack, "sleepy", 3)
        assert [(m["from"], m["to"]) for m in moves] == [(None, "new"), ("new", "active"), ("active", "at_risk")]
        await produce(stack, "events.browse", [("clock", browse(2, "clock", T0 + 200 * DAY))])  # ... and day 180
        moves = await wait_for_moves(stack, "sleepy", 4)
    assert [(m["from"], m["to"]) for m in moves] == [(None, "new"), ("new", "active"), ("active", "at_risk"), ("at_risk", "churned")]
    assert [m["cause"]["kind"] for m in moves] == ["event", "timer", "timer", "timer"]
    # exactly when the thresholds were crossed (1 ms past 30, 60 and 180 days), not when the clock moved
    assert [m["at"] for m in moves[1:]] == [rfc3339(T0 + d * DAY + 1) for d in (30, 60, 180)]
    assert len({m["change_id"] for m in moves}) == 4
