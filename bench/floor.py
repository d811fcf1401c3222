"""The I/O floor: what the engine's own I/O costs per event with no rules at all.

``python -m bench.floor`` (and a row of `make bench`): on a stack of its own, the benchmark's
workload is consumed as the engine's worker consumes it (aiokafka batches of up to 2,000
records), each record decoded (orjson), the batch's events grouped by customer, each
customer's running totals packed (MessagePack) and written with the engine's own compare-and-set
script (``RedisStore.save``: one call per batch, the version checked, the timer set), records
of a change's size published with the engine's own sink (``KafkaSink``: one producer batch
per partition, acknowledged) and the offsets committed after them. No rules, no timers decided,
no outbox, no change records kept, no state cache check: a lower bound on what an engine of this
design pays per event in this process, beside raw consume in the same run.

It runs twice, publishing as many records per event as the engine does with the core rules
(``CORE_RECORDS_PER_EVENT``) and with every shipped pack (``DEFAULT_RECORDS_PER_EVENT``):
the records `bench.fold` publishes for its 10,000-event workload (8,497 and 45,589, the timers'
decisions among them), per event. Each engine figure of the same run over the floor's is the
share of the engine's time that its I/O alone would take.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

import orjson
import ormsgpack
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.run import TOPICS, produce, raw_consume, workload
from segengine.devstack import DevStack
from segengine.kafka import KafkaSink
from segengine.records import OutRecord
from segengine.store import Write
from segengine.store_redis import RedisStore, connect
from segengine.topic_names import CHANGES_TOPIC

CORE_RECORDS_PER_EVENT = 0.85
DEFAULT_RECORDS_PER_EVENT = 4.56
BATCH = 2000  # records per batch at most, as the engine's default (SEGENGINE_BATCH_MAX_RECORDS)
DAY_MS = 86_400_000

console = Console()


def cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def change_value(cid: str, ts: int, n: int) -> bytes:
    """A record of a segment change's size and shape."""
    cause = {"kind": "event", "topic": "events.purchase", "partition": 0, "offset": n}
    change = {"change_id": f"{n:032x}", "customer_id": cid, "dimension": "value_tier", "from": "B", "to": "A"}
    return orjson.dumps({**change, "at": ts, "cause": cause})


async def floor_run(
    bootstrap: str, redis_url: str, total: int, records_per_event: float, group: str
) -> dict[str, float]:
    """Events per second and CPU µs per event (this process) from the first batch to the last commit."""
    redis = connect(redis_url)
    store = RedisStore(redis)
    consumer = AIOKafkaConsumer(*TOPICS, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, max_partition_fetch_bytes=4 << 20, fetch_max_bytes=64 << 20)  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await consumer.start()
    await producer.start()
    sink = KafkaSink(producer)
    states: dict[str, list[Any]] = {}  # customer -> [version, events, spend, last ts]
    owed = 0.0  # records owed to the rate asked for
    n, started, cpu_start, published = 0, 0.0, 0.0, 0
    try:
        with Progress(
            TextColumn(f"(f) I/O floor, {records_per_event} records per event"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console,
        ) as progress:  # fmt: skip
            task = progress.add_task("", total=total)
            while n < total:
                batch = await consumer.getmany(timeout_ms=500, max_records=BATCH)
                if not batch:
                    continue
                if not started:
                    started, cpu_start = time.perf_counter(), cpu_s()
                by_customer: dict[str, list[tuple[int, dict[str, Any]]]] = {}
                offsets = {}
                for tp, records in batch.items():
                    for rec in records:
                        event = orjson.loads(rec.value)
                        by_customer.setdefault(event["customer_id"], []).append((tp.partition, event))
                    offsets[tp] = records[-1].offset + 1
                writes, out = [], []
                for cid, events in by_customer.items():
                    state = states.setdefault(cid, [0, 0, 0.0, 0])
                    for _, event in events:
                        state[1] += 1
                        state[2] += event.get("amount", 0.0)
                        state[3] = max(state[3], event["ts"])
                        owed += records_per_event
                        while owed >= 1:
                            owed -= 1
                            published += 1
                            out.append(OutRecord(CHANGES_TOPIC, cid.encode(), change_value(cid, state[3], published)))
                    blob = ormsgpack.packb(state[1:])
                    writes.append(
                        Write(cid, state[0], blob, b"", {}, home=events[0][0], next_check=state[3] + 60 * DAY_MS)
                    )
                for w, done in zip(writes, await store.save(writes)):
                    if not done:
                        raise RuntimeError(f"the floor lost a compare-and-set on {w.customer_id}: another writer?")
                    states[w.customer_id][0] += 1
                if out:
                    await sink.publish(out)
                await consumer.commit(offsets)
                n += sum(len(records) for records in batch.values())
                progress.update(task, completed=n)
        elapsed = time.perf_counter() - started
        return {"eps": n / elapsed, "cpu_us": (cpu_s() - cpu_start) / n * 1e6, "published": published}
    finally:
        await consumer.stop()
        await producer.stop()
        await redis.aclose()


async def floor_figures(records: list[tuple[str, bytes, bytes]]) -> dict[str, Any]:
    """The floor at both record rates and raw consume, on a stack of their own."""
    async with DevStack() as stack:
        await produce(stack.kafka_bootstrap, records)
        raw = await raw_consume(stack.kafka_bootstrap, len(records))
        figures: dict[str, Any] = {"raw_eps_floor": round(raw)}
        for name, rate in (("core", CORE_RECORDS_PER_EVENT), ("default", DEFAULT_RECORDS_PER_EVENT)):
            db = "1" if name == "core" else "2"  # each run its own database: every customer new to it
            url = stack.redis_url.rsplit("/", 1)[0] + "/" + db
            run = await floor_run(stack.kafka_bootstrap, url, len(records), rate, f"bench-floor-{name}")
            figures[f"floor_eps_{name}"] = round(run["eps"])
            figures[f"floor_raw_ratio_{name}"] = round(run["eps"] / raw, 4)
            figures[f"floor_cpu_us_per_event_{name}"] = round(run["cpu_us"], 1)
    return figures


def floor_rows(table: Table, floor: dict[str, Any], results: dict[str, Any]) -> None:
    """The floor's rows; with the engine's figures of the same run in ``results``, the engine's
    CPU per event over the floor's (how many times its I/O alone it spends)."""
    table.add_row("(f) raw consume, the floor's own stack", f"{floor['raw_eps_floor']:,} events/s", "")
    for name, engine_cpu, label in (
        ("core", "cpu_us_per_event_core", f"core rules' {CORE_RECORDS_PER_EVENT}"),
        ("default", "cpu_us_per_event", f"every pack's {DEFAULT_RECORDS_PER_EVENT}"),
    ):
        beside = ""
        if results.get(engine_cpu):
            beside = f"; the engine {results[engine_cpu] / floor[f'floor_cpu_us_per_event_{name}']:.1f}x that CPU"
        table.add_row(
            f"(f) I/O floor, no rules, {label} records per event: events/s; ratio to raw; CPU per event",
            f"{floor[f'floor_eps_{name}']:,}; {floor[f'floor_raw_ratio_{name}']:.2%}; "
            f"{floor[f'floor_cpu_us_per_event_{name}']:.1f} µs{beside}",
            "",
        )


def main() -> None:
    figures = asyncio.run(floor_figures(workload()))
    table = Table(title="segengine benchmark: the I/O floor (not written; `bench.run --only floor` writes it)")
    for column in ("measure", "value", "target"):
        table.add_column(column)
    floor_rows(table, figures, {})
    console.print(table)


if __name__ == "__main__":
    main()
