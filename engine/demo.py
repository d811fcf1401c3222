"""The demo: the CDNOW purchase history, plus synthetic browse, feedback and profile
events for the same customers (and a few malformed records), replayed through the
engine on the embedded stack, with progress, a live table of segment populations and
a closing summary."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .datasets import demo_events, read_cdnow
from .devstack import stack_for
from .evaluate import rfc3339
from .metrics import Metrics
from .pipeline import BatchStats
from .settings import Settings
from .store_redis import RedisStore
from .worker import Worker

console = Console()

# Records a real upstream might send by mistake; each must land in events.dlq.
MALFORMED: list[tuple[str, bytes, bytes]] = [
    ("events.purchase", b"cdnow-00001", b"{not json"),
    (
        "events.purchase",
        b"cdnow-00002",
        orjson.dumps(
            {
                "event_id": "bad-1",
                "customer_id": "cdnow-00002",
                "type": "purchase",
                "ts": 852076800000,
                "order_id": "x",
                "amount": -5,
            }
        ),
    ),
    (
        "events.browse",
        b"cdnow-00003",
        orjson.dumps(
            {
                "event_id": "bad-2",
                "customer_id": "cdnow-00003",
                "type": "browse",
                "ts": 852076800000,
                "action": "teleport",
            }
        ),
    ),
    (
        "events.browse",
        b"cdnow-00004",
        orjson.dumps({"event_id": "bad-3", "customer_id": "", "type": "browse", "ts": 852076800000, "action": "view"}),
    ),
    ("events.feedback", b"cdnow-00005", b"\xff\xfe\x00garbage"),
    (
        "events.profile",
        b"cdnow-00006",
        orjson.dumps(
            {"event_id": "bad-4", "customer_id": "cdnow-00006", "type": "profile", "ts": "yesterday", "attributes": {}}
        ),
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


HEADLINE = ("value_tier", "lifecycle", "loyalty", "rfm_segment")  # shown first, one row per segment


def population_table(population: dict[str, dict[str, int]], rows: int = 32) -> Table:
    """Customers per segment in at most ``rows`` rows: the headline dimensions first, one row
    per segment; then the other dimensions, one row each with their largest segments; what
    does not fit is named in a last row (``segengine segments`` shows everything)."""
    table = Table(title="customers per segment", expand=False)
    table.add_column("dimension")
    table.add_column("segment")
    table.add_column("customers", justify="right")
    budget = rows - 1  # one row kept for naming what does not fit
    listed: list[tuple[str, str, int]] = []
    for dimension in [d for d in HEADLINE if d in population]:
        for segment, count in sorted(population[dimension].items(), key=lambda kv: -kv[1]):
            if count:
                listed.append((dimension, segment, count))
    listed = listed[:budget]
    for dimension, segment, count in listed:
        table.add_row(dimension, segment, f"{count:,}")
    shown = {d for d, _, _ in listed}
    others = [d for d in sorted(population) if d not in HEADLINE and any(population[d].values())]
    for dimension in others[: max(0, budget - len(listed))]:
        top = sorted(((s, n) for s, n in population[dimension].items() if n), key=lambda kv: -kv[1])
        cell = ", ".join(f"{s} {n:,}" for s, n in top[:3]) + (f", +{len(top) - 3} more" if len(top) > 3 else "")
        table.add_row(dimension, cell, f"{sum(n for _, n in top):,}")
        shown.add(dimension)
    hidden = [d for d in [*HEADLINE, *others] if d in population and d not in shown and any(population[d].values())]
    if hidden:
        table.add_row(f"+{len(hidden)} more", ", ".join(hidden[:5]) + (", …" if len(hidden) > 5 else ""), "")
    return table


def actions_sent(metrics: Metrics) -> str:
    """Actions by name, as the worker counted them: sent, and held back (cooldown, suppression)."""
    sent: dict[str, int] = {}
    held = 0
    for family in metrics.actions.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                if sample.labels.get("outcome") == "sent":
                    sent[sample.labels["action"]] = int(sample.value)
                else:
                    held += int(sample.value)
    if not sent:
        return "none"
    text = ", ".join(f"{name} {n:,}" for name, n in sorted(sent.items(), key=lambda kv: -kv[1]))
    return text + (f" ({held:,} held back)" if held else "")


async def _produce(
    bootstrap: str,
    records: list[tuple[str, bytes, bytes]],
    progress: Progress,
    security: Mapping[str, Any] | None = None,
) -> None:
    task = progress.add_task("producing events", total=len(records))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, acks="all", **(security or {})
    )
    await producer.start()
    try:
        chunk = 5000
        for i in range(0, len(records), chunk):
            futures = [await producer.send(topic, value=value, key=key) for topic, key, value in records[i : i + chunk]]
            await asyncio.gather(*futures)
            progress.advance(task, len(futures))
    finally:
        await producer.stop()


def demo_records(limit: int | None = None) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) for the whole demo stream, malformed records last."""
    purchases = read_cdnow()
    events = demo_events(purchases)
    if limit is not None:
        events = events[:limit]
    records = [(topic, ev["customer_id"].encode(), orjson.dumps(ev)) for topic, ev in events]
    console.print(
        f"{len(purchases):,} real purchases, {len(events):,} events in all, {len(MALFORMED)} malformed records"
    )
    return records + MALFORMED


async def produce_demo(bootstrap: str, limit: int | None = None, security: Mapping[str, Any] | None = None) -> None:
    """Only produce the demo stream (for a stack whose workers run elsewhere)."""
    records = demo_records(limit)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), TimeElapsedColumn()
    ) as progress:
        await _produce(bootstrap, records, progress, security)


async def run_demo(settings: Settings, *, limit: int | None = None) -> None:
    started = time.perf_counter()
    console.rule("[bold]segengine demo[/bold]: CDNOW purchase history, Jan 1997 - Jun 1998")
    records = demo_records(limit)

    async with stack_for(settings) as (bootstrap, redis_url):
        console.print(f"embedded stack: Kafka {bootstrap}, Redis {redis_url.split('@')[-1]}")  # never a password
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
        )
        with progress:
            await _produce(bootstrap, records, progress)

        api = {
            "http_port": settings.http_port or _free_port(),
            "http_host": "127.0.0.1",
        }  # the worker serves its API there
        worker_settings = settings.model_copy(
            update={"kafka_bootstrap": bootstrap, "redis_url": redis_url, "group_id": "segengine-demo", **api}
        )
        totals = BatchStats()
        done = asyncio.Event()

        def on_batch(stats: BatchStats) -> None:
            totals.records += stats.records
            totals.applied += stats.applied
            totals.duplicates += stats.duplicates
            totals.rejected += stats.rejected
            totals.changes += stats.changes
            totals.published += stats.published
            progress.update(task, completed=totals.records)
            if totals.records >= len(records):
                done.set()

        timer_changes = [0, 0]  # customers fired, changes

        def on_timers(stats: BatchStats) -> None:
            timer_changes[0] += stats.records or 0
            timer_changes[1] += stats.changes

        worker = Worker(worker_settings, on_batch=on_batch)
        worker.on_timers = on_timers
        url = f"http://127.0.0.1:{api['http_port']}"
        console.print(f"API (while the demo runs): {url}/segments, {url}/customers/cdnow-00042, {url}/metrics")
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
        )
        task = progress.add_task("segmenting", total=len(records))
        store = RedisStore(worker.redis)
        run_task = asyncio.create_task(worker.run())
        engine_started = time.perf_counter()
        population: dict[str, dict[str, int]] = {}
        rows = max(10, console.size.height - 12)  # the progress bars, the table's frame, the summary line

        def table() -> Table:
            return population_table(population, rows)

        with Live(Group(progress, table()), console=console, refresh_per_second=4) as live:
            while not done.is_set():
                if run_task.done():
                    run_task.result()  # raises the worker's error
                    raise RuntimeError("the worker stopped before the demo finished")
                await asyncio.sleep(0.5)
                population = await store.population()
                live.update(Group(progress, table()))
            # Every record is in; let time catch up: timers due up to the last event time fire.
            partitions = range(worker.input_partition_count)
            timer_task = progress.add_task("timers due up to the last event", total=None)
            while await store.timer_backlog(partitions, worker.processor.clock.now()):
                if run_task.done():
                    run_task.result()
                    raise RuntimeError("the worker stopped before the demo finished")
                await asyncio.sleep(0.5)
                progress.update(timer_task, completed=timer_changes[1])
                population = await store.population()
                live.update(Group(progress, table()))
            progress.update(timer_task, total=timer_changes[1], completed=timer_changes[1])
            # Population-ranked scores (RFM) against the population as it ends.
            rescore_task = progress.add_task("re-scoring against the final population", total=None)
            await worker.renew_population_sample()
            rescored = await worker.rescore()
            progress.update(rescore_task, total=rescored, completed=rescored)
            population = await store.population()
            live.update(Group(progress, table()))
        engine_seconds = time.perf_counter() - engine_started
        snapshot = Path("demo-metrics.prom")
        snapshot.write_bytes(worker.metrics.exposition()[0])
        worker.stop()
        await run_task

    console.print()
    summary = Table(title="summary", show_header=False)
    summary.add_row("records consumed", f"{totals.records:,}")
    summary.add_row("events applied", f"{totals.applied:,}")
    summary.add_row("duplicates ignored", f"{totals.duplicates:,}")
    summary.add_row("rejected to events.dlq", f"{totals.rejected:,}")
    summary.add_row(
        "segment changes emitted", f"{totals.changes + timer_changes[1]:,} ({timer_changes[1]:,} by timers)"
    )
    summary.add_row("actions sent", actions_sent(worker.metrics))
    summary.add_row("as of (event time)", rfc3339(worker.processor.clock.now()))
    summary.add_row("engine throughput", f"{totals.records / engine_seconds:,.0f} events/s ({engine_seconds:.1f} s)")
    summary.add_row("metrics snapshot", str(snapshot))
    summary.add_row("wall time", f"{time.perf_counter() - started:.1f} s")
    console.print(summary)
