"""`make bench`: one run, one fresh embedded stack, figures side by side.

 workload  a fixed, seeded stream: 200,000 events over 20,000 customers (70% browse,
           30% purchase), produced once to events.browse / events.purchase
 (a) engine_eps   `segengine run` in its own process, from its first commit until the last
                  input is committed and the timers those inputs made due are decided (the
                  timer backlog is 0 again: nothing left behind), with every shipped pack
                  (the default; its own stack, for its Redis bytes per customer);
                  engine_eps_core the same with value tier + lifecycle only. The backlog at
                  the last commit and the seconds to work it off are reported beside, and
                  the customers a population re-score re-evaluated inside the span (one
                  falls in when the run outlasts the first sample renewal, 60 s of wall
                  time: on a slow machine; it adds work and bytes to the figures)
 (b) raw_eps      aiokafka consume + orjson decode of the same records (the ceiling)
 (c) naive_eps    a faust agent awaiting Redis once per event (the tutorial baseline)
 (d) latency      produce -> segment change, p50/p99: more events of the workload's customers,
                  spread over its mix, offered at half the sustained rate just measured; every
                  event that caused a change is a sample: for the default packs and the core
 (p) processes    the core rules with `run --processes 2`, raw consume in the same run
 (g) growth       the core rules on 10x the customers (200,000, the same events per customer):
                  events/s and Redis bytes per customer beside (a)'s; `--only growth`
 memory           Redis bytes per customer after (a)
 re-evaluation    live p50/p99 at a fixed load before and while a rules switch re-evaluates every customer
 timers           a live-clock engine (its own stack): how many due customers per second
                  its due loop re-evaluates (a burst all due at once), and the due-time lag
                  p99 at a steady TIMER_STEADY_PER_S due customers per second
 replay           the producer of `segengine replay`: the CDNOW file, read and produced
 predictive       the six predictive features of one customer with the shipped model (CDNOW's
                  customers at the end of the data), pure
 hot customer     pure fold cost per event of one customer after 10k and 50k of its events
                  (bench/hot.py); `python -m bench.run --only hot` runs only this part
 crc32            the same workload produced by confluent-kafka (CRC32 partitioner): engine and
                  raw-consume rates in one run; `python -m bench.run --only crc32`
 cluster          the core rules with the state on a 3-primary Redis Cluster (engine_eps_cluster
                  beside engine_eps_core), raw consume in the same run; `--only cluster`
 (f) I/O floor    the engine's own I/O with no rules (bench/floor.py): consume, decode, one
                  compare-and-set write per customer per batch, as many change-sized records
                  published per event as the core rules and every pack publish, commit; raw
                  consume in the same run; `--only floor`

Prints a table and writes bench-results.json. Speed is reported here, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.hot import hot_customer
from bench.reeval import OFFERED_EPS as REEVAL_EPS
from bench.reeval import reevaluation_latency
from segengine import NATIVE
from segengine.devcluster import DevCluster
from segengine.devstack import DevStack, free_port

SEED = 20261124
EVENTS = 200_000
CUSTOMERS = 20_000
BROWSE_SHARE = 0.7
LATENCY_SECONDS = 15  # (d) offers half of each configuration's sustained rate, measured just before
GROWTH_CUSTOMERS = 10 * CUSTOMERS  # the growth run: 10x the customers, the same events per customer
NAIVE_BUDGET_S = 30
TIMER_BURST = 20_000  # customers all due at the same moment
TIMER_STEADY = 10_000  # customers due one after another, at TIMER_STEADY_PER_S
TIMER_STEADY_PER_S = 1_000
TIMER_LEAD_S = 15  # from producing their purchases to the first due time: time to ingest them
TOPICS = ("events.browse", "events.purchase")
ACTIONS = ("view", "view", "view", "search", "add_to_cart", "remove_from_cart", "checkout_start", "wishlist")
ROOT = Path(__file__).resolve().parent.parent
console = Console()
# The targets of the default configuration (the table's "target" column): the ratios to raw
# consume in the same run, the engine's CPU per event with the default packs (a quarter of the
# 747.3 µs measured when the targets were set), Redis bytes per customer, and the p99 from
# produce to change at half the sustained rate.
RATIO_TARGET, RATIO_TARGET_CORE = 0.04, 0.09
CPU_US_TARGET = 747.3 / 4
BYTES_TARGET, BYTES_TARGET_CORE = 1_500, 1_000
P99_MS_TARGET = 100


def verdict(value: float, target: float, shown: str, *, at_least: bool = False) -> str:
    """PASS, or MISS with the target (``shown``): ``value`` against ``target``, at most it
    (or at least it)."""
    return "PASS" if (value >= target if at_least else value <= target) else f"MISS ({shown})"


def core_rules() -> Path:
    """A rules folder with the core path's packs: value tier and lifecycle."""
    rules = Path(tempfile.mkdtemp(prefix="segengine-bench-rules-"))
    for pack in ("value_tier.yaml", "lifecycle.yaml"):
        shutil.copy(ROOT / "rules" / pack, rules / pack)
    return rules


def workload(events: int = EVENTS, customers: int = CUSTOMERS) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value), in event-time order; the same for every run of the same size."""
    rng = random.Random(SEED)
    day = 86_400_000
    ref = (int(time.time() * 1000) // day - 1) * day  # yesterday, midnight UTC
    start = ref - 120 * day
    rows = []
    for i in range(events):
        cid = f"bench-{rng.randrange(customers):06d}" if i >= customers else f"bench-{i:06d}"
        ts = start + rng.randrange(120 * day)
        if rng.random() < BROWSE_SHARE:
            ev: dict[str, Any] = {"event_id": f"b{i}", "customer_id": cid, "type": "browse", "ts": ts, "action": rng.choice(ACTIONS),
                                  "category": rng.choice(("running", "gym", "outdoor")), "product_id": f"p{rng.randrange(5000)}"}  # fmt: skip
            topic = "events.browse"
        else:
            ev = {"event_id": f"p{i}", "customer_id": cid, "type": "purchase", "ts": ts, "order_id": f"o{i}",
                  "amount": round(rng.lognormvariate(3.5, 1.0), 2), "currency": "USD", "channel": "web"}  # fmt: skip
            topic = "events.purchase"
        rows.append((ts, topic, cid.encode(), orjson.dumps(ev)))
    rows.sort(key=lambda r: r[0])
    return [(topic, key, value) for _, topic, key, value in rows]


async def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    started = time.perf_counter()
    with Progress(
        TextColumn("producing workload"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("", total=len(records))
        for i in range(0, len(records), 10_000):
            futures = [await producer.send(t, value=v, key=k) for t, k, v in records[i : i + 10_000]]
            await asyncio.gather(*futures)
            progress.advance(task, len(futures))
    await producer.stop()
    return len(records) / (time.perf_counter() - started)


def produce_crc32(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> float:
    """The same workload from a producer we did not write: confluent-kafka (librdkafka), with
    its default partitioner (CRC32 of the key, not the Java client's murmur2)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    started = time.perf_counter()
    with Progress(
        TextColumn("producing workload (confluent-kafka, CRC32)"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("", total=len(records))
        for i, (topic, key, value) in enumerate(records):
            while True:
                try:
                    producer.produce(topic, value=value, key=key)
                    break
                except BufferError:  # the local queue is full: let it drain
                    producer.poll(0.05)
            if i % 10_000 == 9_999:
                producer.poll(0)
                progress.advance(task, 10_000)
        if producer.flush(120) != 0:
            raise RuntimeError("confluent-kafka did not deliver the whole workload")
        progress.update(task, completed=len(records))
    return len(records) / (time.perf_counter() - started)


async def crc32_run(records: list[tuple[str, bytes, bytes]], rules: Path) -> dict[str, Any]:
    """Engine and raw-consume rates, in one run, on a workload partitioned by CRC32."""
    async with DevStack() as stack:
        await asyncio.to_thread(produce_crc32, stack.kafka_bootstrap, records)
        raw = await raw_consume(stack.kafka_bootstrap, len(records))
        cpu: dict[str, float] = {}
        eps, proc = await engine_run(stack, len(records), rules, cpu)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    return {
        "engine_eps_crc32": round(eps),
        "raw_eps_crc32": round(raw),
        "engine_raw_ratio_crc32": round(eps / raw, 4),
        "cpu_us_per_event_crc32": round((cpu["end"] - cpu["start"]) / max(1, cpu["events"]) * 1e6, 1),
    }


async def cluster_run(records: list[tuple[str, bytes, bytes]], rules: Path) -> dict[str, Any]:
    """Engine and raw-consume rates, in one run, with the state on a 3-primary Redis Cluster
    (segengine.devcluster) instead of a single primary; the core rules."""
    async with DevStack(redis=False) as stack, DevCluster(primaries=3) as cluster:
        await produce(stack.kafka_bootstrap, records)
        raw = await raw_consume(stack.kafka_bootstrap, len(records))
        cpu: dict[str, float] = {}
        eps, proc = await engine_run(
            stack, len(records), rules, cpu, label="(a) engine, Redis Cluster", redis_url=cluster.cluster_url
        )
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    return {
        "engine_eps_cluster": round(eps),
        "raw_eps_cluster": round(raw),
        "engine_raw_ratio_cluster": round(eps / raw, 4),
        "cpu_us_per_event_cluster": round((cpu["end"] - cpu["start"]) / max(1, cpu["events"]) * 1e6, 1),
    }


async def raw_consume(bootstrap: str, total: int) -> float:
    consumer = AIOKafkaConsumer(*TOPICS, bootstrap_servers=bootstrap, group_id="bench-raw", auto_offset_reset="earliest",
                                enable_auto_commit=False, max_partition_fetch_bytes=4 << 20, fetch_max_bytes=64 << 20)  # fmt: skip
    await consumer.start()
    n, started = 0, None
    while n < total:
        batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
        if batch and started is None:
            started = time.perf_counter()
        for records in batch.values():
            for rec in records:
                orjson.loads(rec.value)
            n += len(records)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    await consumer.stop()
    return n / elapsed


async def committed_total(watcher: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
    """The group's committed offsets, read by a consumer that never joins the group."""
    return sum([(await watcher.committed(tp)) or 0 for tp in tps])


def spawn(args: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    return asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=open(ROOT / ".bench-child.log", "ab"),
    )  # type: ignore[return-value]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children so far (Linux /proc: the worker
    processes of `run --processes N` too), steadier than wall time on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return own + sum(cpu_seconds(int(child)) for child in children)


async def default_packs_run(
    records: list[tuple[str, bytes, bytes]], raw_eps: float | None, rules: Path = ROOT / "rules", name: str = "default"
) -> dict[str, Any]:
    """The engine with every shipped pack (what `segengine run` loads by default) on the same
    workload, on a stack of its own (so that Redis holds only its state); ``raw_eps`` is (b),
    measured here first when None (then ``raw_eps`` is in the figures too). ``rules`` and
    ``name``: other packs, for ``--only``."""
    async with DevStack() as stack:
        await produce(stack.kafka_bootstrap, records)
        measured = (
            {} if raw_eps is not None else {"raw_eps": round(await raw_consume(stack.kafka_bootstrap, len(records)))}
        )
        raw_eps = raw_eps if raw_eps is not None else measured["raw_eps"]
        redis = Redis.from_url(stack.redis_url)
        before = int((await redis.info("memory"))["used_memory"])
        cpu: dict[str, float] = {}
        eps, engine = await engine_run(stack, len(records), rules, cpu, label=f"(a) engine, {name} packs")
        after = int((await redis.info("memory"))["used_memory"])
        latencies, offered, missing, rescored = await latency(
            stack, records, round(eps / 2), int(cpu["port"]), f", {name} packs,"
        )
        engine.send_signal(signal.SIGTERM)
        await asyncio.wait_for(engine.wait(), 30)
        await redis.aclose()
    return {
        "engine_eps": round(eps),
        "engine_raw_ratio": round(eps / raw_eps, 4),
        "cpu_us_per_event": round((cpu["end"] - cpu["start"]) / max(1, cpu["events"]) * 1e6, 1),
        "timer_backlog_at_last_commit": round(cpu["backlog"]),
        "timer_drain_s": round(cpu["drain_s"], 1),
        "bulk_reevaluated": round(cpu["reevaluated"]),
        "redis_bytes_per_customer_default": round((after - before) / CUSTOMERS),
        "p50_ms": round(pct(latencies, 50), 1),
        "p99_ms": round(pct(latencies, 99), 1),
        "offered_eps": round(offered),
        "latency_reevaluated": rescored,
        "latency_missing": missing,
        "latency_samples": len(latencies),
        **measured,
    }


async def sized_run(
    records: list[tuple[str, bytes, bytes]], customers: int, rules: Path, *, processes: int = 1, label: str
) -> dict[str, float]:
    """The engine on a stack of its own: its rate beside raw consume in the same run, its CPU per
    event (the worker processes' together) and Redis bytes per customer."""
    async with DevStack() as stack:
        await produce(stack.kafka_bootstrap, records)
        raw = await raw_consume(stack.kafka_bootstrap, len(records))
        redis = Redis.from_url(stack.redis_url)
        before = int((await redis.info("memory"))["used_memory"])
        cpu: dict[str, float] = {}
        env = {"SEGENGINE_PROCESSES": str(processes)}
        eps, engine = await engine_run(stack, len(records), rules, cpu, label=label, env=env, timeout_s=3600)
        after = int((await redis.info("memory"))["used_memory"])
        engine.send_signal(signal.SIGTERM)
        await asyncio.wait_for(engine.wait(), 60)
        await redis.aclose()
    return {
        "eps": round(eps),
        "raw_eps": round(raw),
        "ratio": round(eps / raw, 4),
        "cpu_us_per_event": round((cpu["end"] - cpu["start"]) / max(1, cpu["events"]) * 1e6, 1),
        "bytes_per_customer": round((after - before) / customers),
    }


async def growth_run(rules: Path) -> dict[str, Any]:
    """The core rules on 10x the customers (the same events per customer): the cost curve."""
    size = sized_run(workload(EVENTS * GROWTH_CUSTOMERS // CUSTOMERS, GROWTH_CUSTOMERS), GROWTH_CUSTOMERS, rules,
                     label=f"(g) engine, core rules, {GROWTH_CUSTOMERS:,} customers")  # fmt: skip
    return {f"{k}_growth": v for k, v in (await size).items()} | {"customers_growth": GROWTH_CUSTOMERS}


async def processes_run(records: list[tuple[str, bytes, bytes]], rules: Path) -> dict[str, Any]:
    """The core rules with `run --processes 2` (two workers in one group, one supervisor)."""
    figures = await sized_run(records, CUSTOMERS, rules, processes=2, label="(p) engine, core rules, 2 processes")
    return {f"{k}_processes_2": v for k, v in figures.items()}


async def engine_run(
    stack: DevStack,
    total: int,
    rules: Path,
    cpu: dict[str, float] | None = None,
    *,
    label: str = "(a) engine",
    redis_url: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 600,
) -> tuple[float, asyncio.subprocess.Process]:
    """The engine from its first commit until every input record is committed and the
    timers that time, moved by those records, made due are decided (its timer backlog 0): a
    rate that leaves no work behind. ``cpu`` gets the engine's CPU seconds over that span
    ("start", "end"), the events in it, the timer backlog at the last commit with the
    seconds it took to work off ("backlog", "drain_s"), and the customers re-evaluated from the
    first commit to the end ("reevaluated"): a population re-score (every customer, when the
    sample renewed each ``quantiles_refresh_s`` of wall time moved) falls inside the span when
    the run outlasts the first renewal, on a slow machine, and adds its work to the figures."""
    port = free_port()
    if cpu is not None:
        cpu["port"] = port  # its /metrics, for what the latency load meets (see latency)
    env = {"SEGENGINE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "SEGENGINE_REDIS_URL": redis_url or stack.redis_url, "SEGENGINE_RULES_FILE": str(rules),
           "SEGENGINE_GROUP_ID": "bench-engine", "SEGENGINE_CLOCK": "event", "SEGENGINE_LOG_LEVEL": "WARNING",
           "SEGENGINE_HTTP_HOST": "127.0.0.1", "SEGENGINE_HTTP_PORT": str(port), **(env or {})}  # fmt: skip
    proc = await spawn(["-m", "segengine", "run"], env)  # type: ignore[misc]
    watcher = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, group_id="bench-engine", enable_auto_commit=False
    )
    await watcher.start()
    tps = [TopicPartition(t, p) for t in TOPICS for p in range(6)]
    first: tuple[float, int] | None = None
    last: tuple[float, int] = (time.perf_counter(), 0)
    reevaluated_at_first = 0.0
    figures = cpu if cpu is not None else {}
    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("", total=total)
        deadline = time.perf_counter() + timeout_s
        while last[1] < total and time.perf_counter() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"the engine exited with code {proc.returncode}")
            n = await committed_total(watcher, tps)
            now = time.perf_counter()
            if n > last[1]:
                if first is None:
                    first = (now, n)
                    figures["start"] = cpu_seconds(proc.pid)
                    reevaluated_at_first = await reevaluated(port)
                last = (now, n)
                figures["end"] = cpu_seconds(proc.pid)
                progress.update(task, completed=n)
            await asyncio.sleep(0.1)
    await watcher.stop()
    if first is None or last[1] < total:
        raise RuntimeError(f"the engine committed {last[1]} of {total} events")
    committed_at = last[0]
    async with ClientSession() as http:
        backlog, fired, reevaluated_so_far = await timer_figures(http, port)
        figures["backlog"] = backlog
        while backlog > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
            if proc.returncode is not None:
                raise RuntimeError(f"the engine exited with code {proc.returncode}")
            backlog, now_fired, reevaluated_so_far = await timer_figures(http, port)
            if now_fired > fired:  # the last timer decision seen: the end of the work
                fired, last = now_fired, (time.perf_counter(), last[1])
                figures["end"] = cpu_seconds(proc.pid)
    if backlog > 0:
        console.print(f"[yellow]warning: {backlog:,.0f} due customers still undecided after {timeout_s:.0f} s[/yellow]")
    figures["drain_s"] = last[0] - committed_at
    figures["reevaluated"] = reevaluated_so_far - reevaluated_at_first  # at the drain's last look
    figures["events"] = last[1] - first[1]
    return (last[1] - first[1]) / (last[0] - first[0]), proc


# How often the drain is watched on the engine's /metrics: each look renders the whole page in
# the engine's process (some milliseconds of its CPU, counted in its CPU per event): twice a
# second (the drain's end is seen within half a second), not ten times.
DRAIN_POLL_S = 0.5


async def engine_samples(http: ClientSession, port: int) -> dict[str, float]:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        page = await response.text()
    return {s.name: s.value for family in text_string_to_metric_families(page) for s in family.samples}


REEVALUATED = "segengine_reevaluated_customers_total"  # rules switches and population re-scores


async def timer_figures(http: ClientSession, port: int) -> tuple[float, float, float]:
    """The engine's timer backlog gauge, timers fired and customers re-evaluated so far, from
    one look at its /metrics (the backlog is counted about once a second)."""
    samples = await engine_samples(http, port)
    return (
        samples.get("segengine_timer_backlog", 0.0),
        samples.get("segengine_timers_fired_total", 0.0),
        samples.get(REEVALUATED, 0.0),
    )


async def reevaluated(port: int) -> float:
    """Customers the engine re-evaluated so far (rules switches and population re-scores)."""
    async with ClientSession() as http:
        return (await engine_samples(http, port)).get(REEVALUATED, 0.0)


def latency_load(records: list[tuple[str, bytes, bytes]], count: int) -> list[tuple[str, bytes, bytes, str]]:
    """``count`` events spread evenly over the workload, as new events (ids prefixed ``lat-``)
    of the same customers: the engine in its steady state, on the mix its sustained rate was
    measured on. (topic, key, value, event_id)."""
    load = []
    for topic, key, value in records[:: max(1, len(records) // count)][:count]:
        ev = orjson.loads(value)
        ev["event_id"] = f"lat-{ev['event_id']}"
        if "order_id" in ev:
            ev["order_id"] = f"lat-{ev['order_id']}"
        load.append((topic, key, orjson.dumps(ev), ev["event_id"]))
    return load


async def latency(
    stack: DevStack, records: list[tuple[str, bytes, bytes]], offered_eps: int, port: int, label: str = ""
) -> tuple[list[float], float, int, int]:
    """More events of the workload's customers (``latency_load``) offered at ``offered_eps``,
    half the engine's sustained rate measured just before on the same stack: for every event
    that caused a segment change, the time from its send to the change's arrival. Returns the
    latencies (ms), the rate offered, how many of the events the engine had not committed
    10 s after the last was sent (``engine_run``'s group), and how many customers the engine
    (its /metrics on ``port``) re-evaluated meanwhile (a population re-score: every customer
    when the sample's cut points moved). ``BENCH_LATENCY_DUMP=PREFIX``: each sample's send
    time (s from the first) and latency (ms) written to PREFIX<label> as JSON."""
    per_slice, slice_s = max(1, offered_eps // 100), 0.01
    reevaluated_before = await reevaluated(port)
    load = latency_load(records, per_slice * 100 * LATENCY_SECONDS)
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    await consumer._client.force_metadata_update()  # learn the partitions first
    tps = [
        TopicPartition("segments.changes", p) for p in sorted(consumer.partitions_for_topic("segments.changes") or ())
    ]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    watcher = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, group_id="bench-engine", enable_auto_commit=False
    )
    await watcher.start()
    inputs = [TopicPartition(t, p) for t in TOPICS for p in range(6)]
    target = sum((await watcher.end_offsets(inputs)).values()) + len(load)  # every latency event committed
    behind = [target]
    stop = asyncio.Event()
    stop_at = [0.0]

    async def caught_up() -> bool:
        behind[0] = target - await committed_total(watcher, inputs)
        return behind[0] <= 0

    async def receive() -> None:
        while not (stop.is_set() and (time.perf_counter() > stop_at[0] + 10 or await caught_up())):
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batch.values():
                for rec in records:
                    event_id = orjson.loads(rec.value)["cause"].get("event_id")
                    if event_id in sent and event_id not in got:
                        got[event_id] = now

    receiver = asyncio.create_task(receive())
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=0)
    await producer.start()
    started = time.perf_counter()
    n = 0
    with Progress(
        TextColumn(f"(d) latency{label} at {per_slice * 100:,} events/s"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("", total=len(load))
        while n < len(load):
            target = started + (n // per_slice) * slice_s
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for topic, key, value, event_id in load[n : n + per_slice]:
                sent[event_id] = time.perf_counter()
                await producer.send(topic, value=value, key=key)
            n += per_slice
            progress.update(task, completed=n)
        await producer.flush()
    offered = len(load) / (time.perf_counter() - started)
    stop_at[0] = time.perf_counter()
    stop.set()
    await receiver
    await caught_up()
    await producer.stop()
    await consumer.stop()
    await watcher.stop()
    rescored = round(await reevaluated(port) - reevaluated_before)
    if os.environ.get("BENCH_LATENCY_DUMP"):
        Path(os.environ["BENCH_LATENCY_DUMP"] + label.strip(", ").replace(" ", "_")).write_bytes(
            orjson.dumps([[sent[e] - started, (got[e] - sent[e]) * 1000] for e in got])
        )
    latencies = sorted((got[e] - sent[e]) * 1000 for e in got)
    return latencies, offered, max(0, behind[0]), rescored


async def naive_run(stack: DevStack, total: int) -> tuple[float, int, bool]:
    redis = Redis.from_url(stack.redis_url.rsplit("/", 1)[0] + "/1")
    proc = await spawn(["-m", "bench.naive_faust", stack.kafka_bootstrap, stack.redis_url.rsplit("/", 1)[0] + "/1"], {})  # type: ignore[misc]
    first: tuple[float, int] | None = None
    last = (time.perf_counter(), 0)
    budget_end: float | None = None
    try:
        with Progress(
            TextColumn("(c) naive faust agent"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            task = progress.add_task("", total=total)
            give_up = time.perf_counter() + 120
            while last[1] < total:
                now = time.perf_counter()
                if proc.returncode is not None:
                    raise RuntimeError(f"the faust baseline exited with code {proc.returncode}")
                if (budget_end is not None and now > budget_end) or now > give_up:
                    break
                n = int(await redis.get("naive:done") or 0)
                if n > last[1]:
                    if first is None:
                        first = (now, n)
                        budget_end = now + NAIVE_BUDGET_S
                    last = (now, n)
                    progress.update(task, completed=n)
                await asyncio.sleep(0.2)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
        await redis.aclose()
    if first is None or last[0] == first[0]:
        raise RuntimeError("the faust baseline processed nothing")
    return (last[1] - first[1]) / (last[0] - first[0]), last[1], last[1] >= total


async def timer_run(rules: Path) -> tuple[float, list[float], int]:
    """Customers whose next check (lifecycle: at_risk 60 days and 1 ms after the last
    purchase) comes due on the wall clock while a live engine runs: TIMER_BURST all at one
    moment, then TIMER_STEADY spread evenly. Returns the due loop's rate over the burst
    (customers/s, first to last change published), the steady customers' lags (due time to
    change published, ms) and how many customers' changes never came."""
    day = 86_400_000
    async with DevStack() as stack:
        env = {"SEGENGINE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "SEGENGINE_REDIS_URL": stack.redis_url, "SEGENGINE_RULES_FILE": str(rules),
               "SEGENGINE_GROUP_ID": "bench-timers", "SEGENGINE_CLOCK": "wall", "SEGENGINE_LOG_LEVEL": "WARNING",
               "SEGENGINE_QUANTILES_REFRESH_S": "0", "SEGENGINE_RULES_RELOAD_S": "0"}  # fmt: skip
        proc = await spawn(["-m", "segengine", "run"], env)  # type: ignore[misc]
        changes = AIOKafkaConsumer("segments.changes", bootstrap_servers=stack.kafka_bootstrap, auto_offset_reset="earliest",
                                   enable_auto_commit=False, fetch_max_wait_ms=10)  # fmt: skip
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=20, max_batch_size=1 << 20)
        await changes.start()
        await producer.start()
        try:
            warm_up = {
                "event_id": "w",
                "customer_id": "warm-up",
                "type": "purchase",
                "ts": int(time.time() * 1000),
                "order_id": "w",
                "amount": 1.0,
            }
            await producer.send_and_wait("events.purchase", key=b"warm-up", value=orjson.dumps(warm_up))
            if not await _read_changes(changes, lambda read: any(c["customer_id"] == "warm-up" for c, _ in read), 60):
                raise RuntimeError("the live engine did not start")
            first_due = int(time.time() * 1000) + TIMER_LEAD_S * 1000
            due = {f"burst-{i:05d}": first_due for i in range(TIMER_BURST)}
            steady_start = first_due + 5_000
            due.update({f"steady-{i:05d}": steady_start + i * 1000 // TIMER_STEADY_PER_S for i in range(TIMER_STEADY)})
            futures = []
            for i, (cid, at) in enumerate(due.items()):
                ev = {
                    "event_id": f"t{i}",
                    "customer_id": cid,
                    "type": "purchase",
                    "ts": at - 60 * day - 1,
                    "order_id": f"t{i}",
                    "amount": 10.0,
                }
                futures.append(await producer.send("events.purchase", key=cid.encode(), value=orjson.dumps(ev)))
            await asyncio.gather(*futures)
            fired: dict[str, int] = {}
            ingested = [0]

            def all_fired(read: list[tuple[dict[str, Any], int]]) -> bool:
                for change, published in read:
                    if change["cause"]["kind"] == "timer" and change["to"] == "at_risk":
                        fired.setdefault(change["customer_id"], published)
                    elif change["cause"]["kind"] == "event":
                        ingested[0] = max(ingested[0], published)
                return len(fired) >= len(due)

            with Progress(
                TextColumn("(e) timers coming due"), BarColumn(), TimeElapsedColumn(), console=console
            ) as progress:
                task = progress.add_task("", total=len(due))
                await _read_changes(changes, lambda read: (all_fired(read), progress.update(task, completed=len(fired)))[0],
                                    TIMER_LEAD_S + 5 + TIMER_STEADY / TIMER_STEADY_PER_S + 60)  # fmt: skip
            if ingested[0] > first_due:
                console.print(
                    "[yellow]warning: the timer customers were not all ingested before they came due[/yellow]"
                )
        finally:
            await producer.stop()
            await changes.stop()
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
    burst = sorted(ts for cid, ts in fired.items() if cid.startswith("burst-"))
    rate = (len(burst) - 1) / max((burst[-1] - burst[0]) / 1000, 1e-3) if len(burst) > 1 else 0.0
    lags = sorted(float(ts - due[cid]) for cid, ts in fired.items() if cid.startswith("steady-"))
    return rate, lags, len(due) - len(fired)


async def _read_changes(
    consumer: AIOKafkaConsumer, until: Callable[[list[tuple[dict[str, Any], int]]], bool], timeout_s: float
) -> bool:
    """Hand the segment changes read, batch by batch, as (change, record timestamp: when it
    was published), to ``until``; stop when it returns True (then True) or the time is up."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
        if until([(orjson.loads(rec.value), rec.timestamp) for records in batch.values() for rec in records]):
            return True
    return False


async def replay_run(stack: DevStack) -> float:
    """`segengine replay --format cdnow` at --speed max: the same reader and producer."""
    from segengine.datasets import cdnow_path
    from segengine.replay import load
    from segengine.replay import produce as replay_produce

    records = load(cdnow_path(), "cdnow")
    stats = await replay_produce(stack.kafka_bootstrap, records)
    return stats.eps


def eval_cost_us(rules_path: Path) -> float:
    """Micro-benchmark: microseconds to evaluate every dimension of the shipped rules for one
    customer with purchases, browses, feedback and a profile (features computed fresh)."""
    from segengine.evaluate import FoldResult, decide
    from segengine.events import Event, Source
    from segengine.folding import apply
    from segengine.rules import load_rules
    from segengine.state import CustomerState

    rules = load_rules(rules_path)
    state = CustomerState()
    day = 86_400_000
    t0 = 1_700_000_000_000
    bodies = [("purchase", {"amount": 40.0 + i, "order_id": f"o{i}"}) for i in range(8)]
    bodies += [("browse", {"action": a}) for a in ("view", "view", "add_to_cart", "checkout_start", "search")]
    bodies += [("feedback", {"kind": "nps", "score": 9}), ("feedback", {"kind": "complaint"})]
    bodies += [("profile", {"attributes": {"age": 33, "city": "Berlin", "income_band": "middle"}})]
    for i, (type_, body) in enumerate(bodies):
        apply(state, Event(f"e{i}", "c", type_, t0 + i * 9 * day, body, Source("t", 0, i)), dedupe_horizon_ms=7 * day)
    now = t0 + len(bodies) * 9 * day
    result = FoldResult()
    decide(rules, state, "c", now, {}, "k", result)  # the customer's memberships, as the engine keeps them
    rounds = 20_000
    started = time.perf_counter()
    for _ in range(rounds):
        decide(rules, state, "c", now, {}, "k", result)  # the hot path: features, every dimension, no change
    return (time.perf_counter() - started) / rounds * 1e6


def predictive_cost_us(rules_path: Path) -> float:
    """Micro-benchmark: microseconds to read all six predictive features for one customer with
    the shipped predictive pack's model (the CDNOW customers at the end of the data, each pair
    of repeat days and age computed once and kept, as in the engine), Features() itself excluded."""
    from segengine.clv.features import PREDICTED
    from segengine.datasets import date_ms, read_cdnow
    from segengine.events import Event, Source
    from segengine.folding import apply
    from segengine.rules import load_rules
    from segengine.state import CustomerState, Features

    rules = load_rules(rules_path)
    states: dict[str, CustomerState] = {}
    for i, p in enumerate(read_cdnow()):
        event = Event(f"e{i}", p.customer, "purchase", date_ms(p.date), {"order_id": str(i), "amount": p.amount},
                      Source("events.purchase", 0, i))  # fmt: skip
        apply(states.setdefault(p.customer, CustomerState()), event, dedupe_horizon_ms=7 * 86_400_000)
    customers = list(states.values())
    now = date_ms("19980630") + 1

    def one_pass(read: bool) -> float:
        started = time.perf_counter()
        for state in customers:
            features = Features(state, now, rules.derived)
            if read:
                for name in PREDICTED:
                    features[name]
        return time.perf_counter() - started

    one_pass(True)  # the first pass computes each (repeat days, age) pair's parts
    best = min(one_pass(True) - one_pass(False) for _ in range(3))
    return best / len(customers) * 1e6


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]  # type: ignore[index]


async def main() -> None:
    console.rule("[bold]segengine benchmark")
    console.print(f"the pure core: {NATIVE.reason}", highlight=False)
    # The core-path figures use the first rules of the engine: value tier and lifecycle.
    core = core_rules()
    eval_us = eval_cost_us(ROOT / "rules")
    predictive_us = predictive_cost_us(ROOT / "rules")
    console.print(f"the six predictive features for one customer (CDNOW, end of data): {predictive_us:.1f} µs")
    console.print(
        f"evaluating all {len(__import__('segengine.rules', fromlist=['load_rules']).load_rules(ROOT / 'rules').dimensions)} shipped dimensions for one customer: {eval_us:.1f} µs"
    )
    hot = hot_run()
    records = workload()
    async with DevStack() as stack:
        produce_eps = await produce(stack.kafka_bootstrap, records)
        raw_eps = await raw_consume(stack.kafka_bootstrap, len(records))
        redis = Redis.from_url(stack.redis_url)
        before = int((await redis.info("memory"))["used_memory"])
        cpu: dict[str, float] = {}
        engine_eps, engine = await engine_run(stack, len(records), core, cpu)
        after = int((await redis.info("memory"))["used_memory"])
        keys = await redis.dbsize()
        latencies, offered, missing, _ = await latency(
            stack, records, round(engine_eps / 2), int(cpu["port"]), ", core rules,"
        )
        engine.send_signal(signal.SIGTERM)
        await asyncio.wait_for(engine.wait(), 30)
        await redis.aclose()
        reeval = await reevaluation_latency(stack, core, "bench-engine", console)
        naive_eps, naive_events, naive_done = await naive_run(stack, len(records))
        replay_eps = await replay_run(stack)
    lifecycle_rules = Path(tempfile.mkdtemp(prefix="segengine-bench-timers-"))
    shutil.copy(ROOT / "rules" / "lifecycle.yaml", lifecycle_rules / "lifecycle.yaml")
    timer_due_per_s, timer_lags, timer_missing = await timer_run(lifecycle_rules)
    crc32 = await crc32_run(records, core)
    cluster = await cluster_run(records, core)
    default = await default_packs_run(records, raw_eps)
    two = await processes_run(records, core)
    growth = await growth_run(core)
    from bench.floor import floor_figures, floor_rows  # it reads this module's workload and helpers

    floor = await floor_figures(records)

    core_cpu_us = round((cpu["end"] - cpu["start"]) / max(1, cpu["events"]) * 1e6, 1)
    results = {
        **default,  # engine_eps, engine_raw_ratio, cpu_us_per_event: the default packs, what `segengine run` loads
        "engine_eps_core": round(engine_eps),
        "raw_eps": round(raw_eps),
        "engine_raw_ratio_core": round(engine_eps / raw_eps, 4),
        "cpu_us_per_event_core": core_cpu_us,
        "timer_backlog_at_last_commit_core": round(cpu["backlog"]),
        "timer_drain_s_core": round(cpu["drain_s"], 1),
        "bulk_reevaluated_core": round(cpu["reevaluated"]),
        **crc32,
        **cluster,
        **two,
        **growth,
        **floor,
        "naive_eps": round(naive_eps),
        "p50_ms_core": round(pct(latencies, 50), 1),
        "p99_ms_core": round(pct(latencies, 99), 1),
        "offered_eps_core": round(offered),
        "redis_bytes_per_customer": round((after - before) / CUSTOMERS),
        "redis_bytes_per_customer_core": round((after - before) / CUSTOMERS),
        "eval_us_all_dimensions": round(eval_us, 2),
        "predictive_us_per_customer": round(predictive_us, 2),
        "timer_due_per_s": round(timer_due_per_s),
        "timer_lag_p99_ms": round(pct(timer_lags, 99), 1) if timer_lags else None,
        "timer_lag_p50_ms": round(pct(timer_lags, 50), 1) if timer_lags else None,
        "timer_steady_due_per_s": TIMER_STEADY_PER_S,
        "timer_missing": timer_missing,
        "replay_eps": round(replay_eps),
        **reeval,
        **hot,
        "rules_for_core_figures": "value_tier + lifecycle",
        "events": len(records),
        "customers": CUSTOMERS,
        "produce_eps": round(produce_eps),
        "latency_samples_core": len(latencies),
        "latency_missing_core": missing,
        "naive_events": naive_events,
        "naive_finished": naive_done,
        "redis_keys_after_engine": keys,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "core_modules": NATIVE.reason,  # compiled (segengine.native) or Python, in every engine process measured
    }
    (ROOT / "bench-results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    table = Table(title="segengine benchmark", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target")
    table.add_row("(a) engine, every shipped pack (the default)", f"{results['engine_eps']:,} events/s", "")
    table.add_row(
        "(a) engine, core rules (value tier + lifecycle)",
        f"{engine_eps:,.0f} events/s",
        verdict(engine_eps, 10_000, ">= 10,000", at_least=True),
    )
    table.add_row("(b) raw aiokafka + orjson (ceiling)", f"{raw_eps:,.0f} events/s", "")
    table.add_row(
        "(c) naive faust agent, 1 Redis await/event",
        f"{naive_eps:,.0f} events/s" + ("" if naive_done else f" ({naive_events:,} events in {NAIVE_BUDGET_S} s)"),
        "",
    )
    table.add_row(
        f"(d) produce -> change p50 / p99, default packs, at {results['offered_eps']:,} events/s (half its rate)",
        f"{results['p50_ms']} / {results['p99_ms']} ms; {results['latency_reevaluated']:,} customers re-scored meanwhile",
        verdict(results["p99_ms"], P99_MS_TARGET, f"<= {P99_MS_TARGET} ms"),
    )
    table.add_row(
        f"(d) produce -> change p50 / p99, core rules, at {offered:,.0f} events/s (half its rate)",
        f"{results['p50_ms_core']} / {results['p99_ms_core']} ms",
        verdict(results["p99_ms_core"], P99_MS_TARGET, f"<= {P99_MS_TARGET} ms"),
    )
    table.add_row(
        "Redis memory per customer",
        f"{results['redis_bytes_per_customer']:,} bytes",
        verdict(results["redis_bytes_per_customer"], BYTES_TARGET_CORE, f"<= {BYTES_TARGET_CORE:,}"),
    )
    table.add_row(
        "Redis memory per customer, every shipped pack",
        f"{results['redis_bytes_per_customer_default']:,} bytes",
        verdict(results["redis_bytes_per_customer_default"], BYTES_TARGET, f"<= {BYTES_TARGET:,}"),
    )
    table.add_row("the six predictive features, one customer", f"{predictive_us:.1f} µs", "< 5")
    table.add_row(
        f"live p50 / p99 before a rules switch ({REEVAL_EPS:,} events/s)",
        f"{reeval['reeval_p50_ms_before']} / {reeval['reeval_p99_ms_before']} ms",
        "",
    )
    table.add_row(
        "live p50 / p99 while every customer is re-evaluated",
        f"{reeval['reeval_p50_ms_during']} / {reeval['reeval_p99_ms_during']} ms",
        "",
    )
    table.add_row(
        "rules re-evaluation: changes, duration",
        f"{reeval['reeval_changes']:,} changes in {reeval['reeval_seconds']} s",
        "",
    )
    table.add_row(
        "evaluate all shipped dimensions, 1 customer",
        f"{eval_us:.1f} µs",
        verdict(eval_us, 20, "<= 20 µs"),
    )
    table.add_row(
        f"timers: due customers re-evaluated ({TIMER_BURST:,} due at once)", f"{timer_due_per_s:,.0f} customers/s", ""
    )
    table.add_row(
        f"timers: due time -> change p99 (live, {TIMER_STEADY_PER_S:,} due/s)", f"{results['timer_lag_p99_ms']} ms", ""
    )
    table.add_row(
        "replay producer (CDNOW, --speed max)",
        f"{replay_eps:,.0f} events/s",
        verdict(replay_eps, 30_000, ">= 30,000", at_least=True),
    )
    table.add_row(
        "engine / raw consume, same run: default packs; core",
        f"{results['engine_raw_ratio']:.2%}; {results['engine_raw_ratio_core']:.2%}",
        verdict(results["engine_raw_ratio"], RATIO_TARGET, f">= {RATIO_TARGET:.0%}", at_least=True)
        + "; "
        + verdict(results["engine_raw_ratio_core"], RATIO_TARGET_CORE, f">= {RATIO_TARGET_CORE:.0%}", at_least=True),
    )
    table.add_row(
        "engine CPU per event (its own process): default packs; core",
        f"{results['cpu_us_per_event']:,.1f}; {results['cpu_us_per_event_core']:,.1f} µs",
        verdict(results["cpu_us_per_event"], CPU_US_TARGET, f"<= {CPU_US_TARGET:.0f} µs") + " (default packs)",
    )
    table.add_row(
        "timer backlog at the last input commit; seconds to decide it (inside (a)): default packs; core",
        f"{results['timer_backlog_at_last_commit']:,}, {results['timer_drain_s']} s; "
        f"{results['timer_backlog_at_last_commit_core']:,}, {results['timer_drain_s_core']} s",
        "",
    )
    table.add_row(
        "customers re-scored inside (a) (a population renewal in the run): default packs; core",
        f"{results['bulk_reevaluated']:,}; {results['bulk_reevaluated_core']:,}",
        "",
    )
    _processes_rows(table, two, results)
    _growth_rows(table, growth, results)
    _crc32_rows(table, crc32)
    _cluster_rows(table, cluster)
    floor_rows(table, floor, results)
    _hot_rows(table, hot)
    console.print(table)
    if missing or results["latency_missing"]:
        console.print(
            f"[yellow]warning: {missing} (core) and {results['latency_missing']} (default) latency events"
            " not committed 10 s after the last was sent[/yellow]"
        )
    if timer_missing:
        console.print(f"[yellow]warning: {timer_missing} due customers got no timer change[/yellow]")
    console.print(f"written {ROOT / 'bench-results.json'}")


def _processes_rows(table: Table, two: dict[str, Any], results: dict[str, Any]) -> None:
    table.add_row(
        "(p) engine, core rules: 1 process; 2 processes (`run --processes 2`)",
        f"{results.get('engine_eps_core', 0):,}; {two['eps_processes_2']:,} events/s",
        "",
    )
    table.add_row(
        "(p) 2 processes: ratio to raw consume (same run); CPU per event",
        f"{two['ratio_processes_2']:.2%}; {two['cpu_us_per_event_processes_2']:,.1f} µs",
        "",
    )


def _growth_rows(table: Table, growth: dict[str, Any], results: dict[str, Any]) -> None:
    table.add_row(
        f"(g) engine, core rules: {CUSTOMERS:,}; {growth['customers_growth']:,} customers",
        f"{results.get('engine_eps_core', 0):,}; {growth['eps_growth']:,} events/s",
        "",
    )
    table.add_row(
        "(g) Redis bytes per customer at both sizes; ratio to raw, CPU per event (large)",
        f"{results.get('redis_bytes_per_customer_core', 0):,}; {growth['bytes_per_customer_growth']:,} B; "
        f"{growth['ratio_growth']:.2%}, {growth['cpu_us_per_event_growth']:,.1f} µs",
        "",
    )


def only_growth() -> None:
    """The growth run alone, merged into an existing bench-results.json."""
    rules = core_rules()
    path = ROOT / "bench-results.json"
    results = orjson.loads(path.read_bytes()) if path.exists() else {}
    _merge_results("growth", asyncio.run(growth_run(rules)), lambda t, g: _growth_rows(t, g, results))


def _crc32_rows(table: Table, crc32: dict[str, Any]) -> None:
    table.add_row(
        "(a') engine, CRC32-partitioned workload (confluent-kafka)", f"{crc32['engine_eps_crc32']:,} events/s", ""
    )
    table.add_row("(b') raw consume, the same workload", f"{crc32['raw_eps_crc32']:,} events/s", "")
    table.add_row(
        "(a') / (b') ratio; engine CPU per event",
        f"{crc32['engine_raw_ratio_crc32']:.2%}; {crc32['cpu_us_per_event_crc32']:,.1f} µs",
        "",
    )


def _cluster_rows(table: Table, cluster: dict[str, Any]) -> None:
    table.add_row(
        "(a'') engine, core rules, 3-primary Redis Cluster", f"{cluster['engine_eps_cluster']:,} events/s", ""
    )
    table.add_row("(b'') raw consume, the same run", f"{cluster['raw_eps_cluster']:,} events/s", "")
    table.add_row(
        "(a'') / (b'') ratio; engine CPU per event",
        f"{cluster['engine_raw_ratio_cluster']:.2%}; {cluster['cpu_us_per_event_cluster']:,.1f} µs",
        "",
    )


def only_floor() -> None:
    """The I/O floor alone, merged into an existing bench-results.json (the engine's figures
    beside it are that file's)."""
    from bench.floor import floor_figures, floor_rows  # it reads this module's workload and helpers

    path = ROOT / "bench-results.json"
    results = orjson.loads(path.read_bytes()) if path.exists() else {}
    floor = asyncio.run(floor_figures(workload()))
    _merge_results("the I/O floor", floor, lambda t, f: floor_rows(t, f, results))


def only_cluster() -> None:
    """The Redis Cluster figures alone, merged into an existing bench-results.json."""
    rules = core_rules()
    _merge_results("3-primary Redis Cluster", asyncio.run(cluster_run(workload(), rules)), _cluster_rows)


def only_crc32() -> None:
    """The CRC32-partitioned figures alone, merged into an existing bench-results.json."""
    rules = core_rules()
    crc32 = asyncio.run(crc32_run(workload(), rules))
    _merge_results("CRC32-partitioned workload", crc32, _crc32_rows)


def _merge_results(title: str, figures: dict[str, Any], rows: Callable[[Table, dict[str, Any]], None]) -> None:
    """Print one part's figures and merge them into an existing bench-results.json."""
    table = Table(title=f"segengine benchmark: {title}", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target")
    rows(table, figures)
    console.print(table)
    path = ROOT / "bench-results.json"
    results = orjson.loads(path.read_bytes()) if path.exists() else {}
    path.write_bytes(orjson.dumps({**results, **figures}, option=orjson.OPT_INDENT_2))
    console.print(f"written {path}")


def hot_run() -> dict[str, Any]:
    with console.status("one hot customer: folding 51,000 of its events"):
        return hot_customer()


def _hot_rows(table: Table, hot: dict[str, Any]) -> None:
    for n in ("10k", "50k"):
        table.add_row(
            f"hot customer: fold cost per event after {n} of its events",
            f"{hot[f'hot_customer_us_per_event_{n}']:,.1f} µs",
            "",
        )
    table.add_row("hot customer: state document after 50k events", f"{hot['hot_customer_state_bytes_50k']:,} bytes", "")


def _packs_rows(table: Table, figures: dict[str, Any], core: bool) -> None:
    """One engine run's rows (``--only default|core``), each against its target."""
    ratio, bytes_target = (RATIO_TARGET_CORE, BYTES_TARGET_CORE) if core else (RATIO_TARGET, BYTES_TARGET)
    targets = [
        verdict(figures["engine_raw_ratio"], ratio, f">= {ratio:.0%}", at_least=True),
        "-" if core else verdict(figures["cpu_us_per_event"], CPU_US_TARGET, f"<= {CPU_US_TARGET:.0f} µs"),
        verdict(figures["redis_bytes_per_customer_default"], bytes_target, f"<= {bytes_target:,}"),
    ]
    table.add_row("(a) engine", f"{figures['engine_eps']:,} events/s", "")
    table.add_row("(b) raw consume, the same stack", f"{figures['raw_eps']:,} events/s", "")
    table.add_row(
        "(a) / (b); engine CPU per event; Redis per customer",
        f"{figures['engine_raw_ratio']:.2%}; {figures['cpu_us_per_event']:,.1f} µs; "
        f"{figures['redis_bytes_per_customer_default']:,} B",
        "; ".join(targets),
    )
    table.add_row(
        "timer backlog at the last input commit; seconds to decide it (inside (a))",
        f"{figures['timer_backlog_at_last_commit']:,}; {figures['timer_drain_s']} s",
        "",
    )
    table.add_row(
        "customers re-scored inside (a) (a population renewal in the run)", f"{figures['bulk_reevaluated']:,}", ""
    )
    table.add_row(
        f"(d) produce -> change p50 / p99 at {figures['offered_eps']:,} events/s (half its rate)",
        f"{figures['p50_ms']} / {figures['p99_ms']} ms; {figures['latency_reevaluated']:,} customers re-scored meanwhile",
        verdict(figures["p99_ms"], P99_MS_TARGET, f"<= {P99_MS_TARGET} ms"),
    )


def only_packs(name: str) -> None:
    """One engine run (default packs, or the core ones) with raw consume and latency beside it,
    printed only: a quick look at one change, without the whole benchmark."""
    rules = ROOT / "rules" if name == "default" else core_rules()
    console.print(f"the pure core: {NATIVE.reason}", highlight=False)
    figures = asyncio.run(default_packs_run(workload(), None, rules, name))
    table = Table(title=f"segengine benchmark: {name} packs only (not written)", show_header=True)
    for column in ("measure", "value", "target"):
        table.add_column(column)
    _packs_rows(table, figures, core=name != "default")
    console.print(table)


def only_hot() -> None:
    """The hot-customer figures alone, merged into an existing bench-results.json."""
    _merge_results("hot customer", hot_run(), _hot_rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="segengine benchmark")
    parser.add_argument(
        "--only", choices=["hot", "crc32", "cluster", "growth", "floor", "default", "core"],
        help="run one part only (hot: the hot-customer fold cost, pure, about a minute; crc32: the engine on a "
             "CRC32-partitioned workload; cluster: the engine on a 3-primary Redis Cluster; growth: the core "
             "rules on 10x the customers; default, core: one engine run with raw consume and latency, printed only)",
    )  # fmt: skip
    only = parser.parse_args().only
    if only == "hot":
        only_hot()
    elif only == "crc32":
        only_crc32()
    elif only == "cluster":
        only_cluster()
    elif only == "growth":
        only_growth()
    elif only == "floor":
        only_floor()
    elif only in ("default", "core"):
        only_packs(only)
    else:
        asyncio.run(main())
