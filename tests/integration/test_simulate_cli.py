"""`segengine rules simulate` as a user runs it (a subprocess) against the Redis a worker
wrote, on the real embedded stack: the rules in force move nobody, population-ranked scores
included; a changed threshold moves exactly the customers that cross it; the text form
lists only what moves."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from segengine.devstack import DevStack
from segengine.state import CustomerState
from segengine.store_redis import RedisStore
from tests.integration.support import REPO_ROOT, RunningWorker, produce, settings_for

DAY = 86_400_000
NOW = int(time.time() * 1000)
CUSTOMERS = 30
# A population sample as the workers share it (1,000 values per ranked feature: the default minimum).
SHARED = {
    "days_since_last_purchase": [i * 0.05 for i in range(1000)],
    "orders_total": [1.0 + i % 7 for i in range(1000)],
    "spend_total": [float(i) for i in range(1000)],
}


async def simulate(stack: DevStack, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGENGINE_")}
    env |= {"SEGENGINE_REDIS_URL": stack.redis_url, "SEGENGINE_RULES_FILE": str(REPO_ROOT / "rules")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "segengine", "rules", "simulate", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def purchase(i: int) -> tuple[str, dict[str, Any]]:
    """Customer i bought once, for 10 * (i + 1), i + 1 days ago."""
    cid = f"sim-{i:02d}"
    body = {"event_id": f"e{i}", "customer_id": cid, "type": "purchase", "ts": NOW - (i + 1) * DAY,
            "order_id": f"o{i}", "amount": 10.0 * (i + 1)}  # fmt: skip
    return cid, body


async def scored(store: RedisStore) -> int:
    """Customers whose recency score is ranked (not "unscored")."""
    loaded = await store.load([f"sim-{i:02d}" for i in range(CUSTOMERS)])
    states = [CustomerState.loads(row.blob) for row in loaded.values() if row.blob is not None]
    return sum(1 for s in states if s.members.get("recency_score", "unscored") != "unscored")


async def test_simulate_tells_who_a_change_moves_and_nobody_else(
    stack: DevStack, redis_client: Redis, tmp_path: Path
) -> None:
    store = RedisStore(redis_client)
    await store.save_quantile_samples(int(time.time() * 1000), SHARED)  # the workers' shared sample, fresh
    await produce(stack, "events.purchase", [purchase(i) for i in range(CUSTOMERS)])  # type: ignore[arg-type]
    async with RunningWorker(settings_for(stack, timers=False)) as w:
        await w.wait_for(CUSTOMERS, timeout=120)
        for _ in range(600):  # the worker takes the sample in and re-scores whoever it decided before
            if await scored(store) == CUSTOMERS:
                break
            await asyncio.sleep(0.1)
    assert await scored(store) == CUSTOMERS  # ranked by the worker: the preview must rank them alike

    code, out, err = await simulate(stack, str(REPO_ROOT / "rules"), "--json")
    assert code == 0, err
    report = orjson.loads(out)
    assert (report["customers"], report["moves"], report["skipped"]) == (CUSTOMERS, {}, 0), report
    assert report["population"]["sampled_now"] == [] and report["population"]["held_back"] == {}
    assert report["aggregations_without_history"] == []  # the shipped aggregations are not new

    changed = tmp_path / "rules"
    shutil.copytree(REPO_ROOT / "rules", changed)
    tier = changed / "value_tier.yaml"
    tier.write_text(tier.read_text().replace("spend_365d >= 250", "spend_365d >= 150"))
    crossing = sum(1 for i in range(CUSTOMERS) if 150 <= 10 * (i + 1) < 250)
    code, out, err = await simulate(stack, str(changed), "--json")
    assert code == 0, err
    assert orjson.loads(out)["moves"] == {"value_tier": [{"from": "B", "to": "A", "customers": crossing}]}

    code, out, err = await simulate(stack, str(changed))
    assert code == 0, err
    text = " ".join(out.split())
    assert f"value_tier: {crossing} would move" in text and "no moves in 15 dimensions:" in text, out
    assert text.count("would move") == 1 and "have no history" not in err, (out, err)
