"""Live latency while a rules switch re-evaluates every customer in the background.

A worker runs caught up on the benchmark's customers; new customers' first events arrive
at a fixed offered load; the rules file is changed under the worker, which switches and
re-evaluates every customer in throttled steps (``cause.kind = rules``). The figures: p50
and p99 from produce to segment change for live events sent before the switch, and for
live events sent while the re-evaluation ran; and how fast customers were re-evaluated.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console

from segengine.devstack import DevStack

OFFERED_EPS = 1_000
BEFORE_S = 5
AFTER_MAX_S = 60
QUIET_S = 2.0  # the re-evaluation is over when no rules-caused change came for this long


def _pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def reevaluation_latency(stack: DevStack, rules_dir: Path, group_id: str, console: Console) -> dict[str, Any]:
    """Run a worker of ``group_id`` on a copy of ``rules_dir``; switch its rules under load."""
    work = Path(tempfile.mkdtemp(prefix="segengine-bench-reeval-"))
    for pack in rules_dir.glob("*.yaml"):
        (work / pack.name).write_text(pack.read_text())
    env = {**os.environ, "SEGENGINE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "SEGENGINE_REDIS_URL": stack.redis_url,
           "SEGENGINE_RULES_FILE": str(work), "SEGENGINE_GROUP_ID": group_id, "SEGENGINE_RULES_RELOAD_S": "0.5",
           "SEGENGINE_LOG_LEVEL": "WARNING"}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "segengine", "run", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        await consumer._client.force_metadata_update()  # learn the partitions first
        tps = [
            TopicPartition("segments.changes", p)
            for p in sorted(consumer.partitions_for_topic("segments.changes") or ())
        ]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        sent: dict[str, float] = {}
        got: dict[str, float] = {}
        rules_changes: list[float] = []
        done = asyncio.Event()

        async def receive() -> None:
            while not done.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batch.values():
                    for rec in records:
                        cid = rec.key.decode()
                        if cid in sent:
                            got.setdefault(cid, now)
                        elif orjson.loads(rec.value)["cause"]["kind"] == "rules":
                            rules_changes.append(now)

        receiver = asyncio.create_task(receive())
        n = 0

        async def offer_until(stop: Any) -> None:
            nonlocal n
            started, per_slice = time.perf_counter(), OFFERED_EPS // 100
            sent_here = 0
            while not stop():
                target = started + (sent_here // per_slice) * 0.01
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                for _ in range(per_slice):
                    cid = f"reev-{n:06d}"
                    ev = {
                        "event_id": cid,
                        "customer_id": cid,
                        "type": "browse",
                        "ts": int(time.time() * 1000),
                        "action": "view",
                    }
                    sent[cid] = time.perf_counter()
                    await producer.send("events.browse", value=orjson.dumps(ev), key=cid.encode())
                    n += 1
                    sent_here += 1
            await producer.flush()

        for probe in range(600):  # until the worker has joined its group and answers
            cid = f"reev-probe-{probe}"
            ev = {
                "event_id": cid,
                "customer_id": cid,
                "type": "browse",
                "ts": int(time.time() * 1000),
                "action": "view",
            }
            await producer.send_and_wait("events.browse", value=orjson.dumps(ev), key=cid.encode())
            sent[cid] = time.perf_counter()
            await asyncio.sleep(0.1)
            if got:
                break
        else:
            raise RuntimeError("the worker never answered")
        sent.clear()
        got.clear()
        console.print(f"re-evaluation: live load {OFFERED_EPS:,} events/s, {BEFORE_S} s before the rules switch ...")
        before_end = time.perf_counter() + BEFORE_S
        await offer_until(lambda: time.perf_counter() > before_end)
        before_ids = set(sent)
        value_tier = work / "value_tier.yaml"
        value_tier.write_text(value_tier.read_text().replace("spend_365d >= 250", "spend_365d >= 200"))
        switched = time.perf_counter()
        console.print("re-evaluation: rules changed under the worker; live load continues until re-evaluation ends ...")

        def over() -> bool:
            now = time.perf_counter()
            if now - switched > AFTER_MAX_S:
                return True
            return bool(rules_changes) and now - rules_changes[-1] > QUIET_S

        during_start = time.perf_counter()
        await offer_until(over)
        await asyncio.sleep(1)  # the last live events' changes
        done.set()
        await receiver
        if not rules_changes:
            raise RuntimeError("the rules switch caused no re-evaluation changes")
        first, last = rules_changes[0], rules_changes[-1]
        before = [(got[c] - sent[c]) * 1000 for c in before_ids if c in got]
        during = [(got[c] - sent[c]) * 1000 for c, t in sent.items() if c in got and first <= t <= last]
        missing = sum(1 for c in sent if c not in got)
        return {
            "reeval_p50_ms_before": round(_pct(before, 50), 1),
            "reeval_p99_ms_before": round(_pct(before, 99), 1),
            "reeval_p50_ms_during": round(_pct(during, 50), 1),
            "reeval_p99_ms_during": round(_pct(during, 99), 1),
            "reeval_live_events_during": len(during),
            "reeval_changes": len(rules_changes),
            "reeval_seconds": round(last - during_start, 1),
            "reeval_missing_live_changes": missing,
        }
    finally:
        await producer.stop()
        await consumer.stop()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
