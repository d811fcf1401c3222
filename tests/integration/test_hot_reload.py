"""Rules change under a running worker: the switch is atomic between batches, every
customer is re-evaluated in the background (cause.kind = rules), changes after the switch
carry the new version, and an invalid file leaves the old version running."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from segengine.devstack import DevStack
from tests.integration.support import RunningWorker, consume_all, produce, settings_for, values

DAY = 86_400_000
T = (int(time.time() * 1000) // DAY - 1) * DAY
RULES_V1 = "name: tiers\ndimensions:\n  tier:\n    segments:\n      - {name: big, when: spend_365d >= 100}\n    default: small\n"
RULES_V2 = RULES_V1.replace(">= 100", ">= 20")
BROKEN = RULES_V1.replace("spend_365d", "spend_in_a_year")


def purchase(n: int, customer: str, amount: float) -> dict[str, object]:
    return {
        "event_id": f"hr{n}",
        "customer_id": customer,
        "type": "purchase",
        "ts": T - DAY + n,
        "order_id": f"o{n}",
        "amount": amount,
    }


async def wait_until(predicate, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_hot_reload_switches_reevaluates_and_refuses_bad_files(stack: DevStack, tmp_path: Path) -> None:
    rules_file = tmp_path / "tiers.yaml"
    rules_file.write_text(RULES_V1)
    await produce(stack, "events.purchase", [("ann", purchase(1, "ann", 50.0)), ("bo", purchase(2, "bo", 10.0))])
    settings = settings_for(stack, rules_file=rules_file, rules_reload_s=0.1, clock="event")
    async with RunningWorker(settings) as w:
        await w.wait_for(2)
        first = values(await consume_all(stack, "segments.changes"))
        v1 = first[0]["rules_version"]
        assert {(c["customer_id"], c["to"]) for c in first} == {("ann", "small"), ("bo", "small")}

        rules_file.write_text(RULES_V2)  # ann (50) is now big; bo (10) stays small

        async def reevaluated() -> bool:
            return any(c["cause"]["kind"] == "rules" for c in values(await consume_all(stack, "segments.changes")))

        await wait_until(reevaluated)
        changes = values(await consume_all(stack, "segments.changes"))
        by_rules = [c for c in changes if c["cause"]["kind"] == "rules"]
        assert [(c["customer_id"], c["from"], c["to"]) for c in by_rules] == [("ann", "small", "big")]
        v2 = by_rules[0]["rules_version"]
        assert v2 != v1 and v2.startswith("tiers@")

        rules_file.write_text(BROKEN)  # refused: v2 stays in force
        await asyncio.sleep(0.5)
        assert w.worker.processor.rules.version == v2
        assert w.worker.metrics.rules_reloads.labels("refused")._value.get() == 1
        await produce(stack, "events.purchase", [("bo", purchase(3, "bo", 15.0))])  # bo: 25 >= 20 under v2
        await w.wait_for(3)
    bo = [c for c in values(await consume_all(stack, "segments.changes")) if c["customer_id"] == "bo"]
    assert (bo[-1]["from"], bo[-1]["to"], bo[-1]["rules_version"], bo[-1]["cause"]["kind"]) == (
        "small",
        "big",
        v2,
        "event",
    )
