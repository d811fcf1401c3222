"""Helpers for integration tests on the real embedded stack."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from segengine.devcluster import DevCluster
from segengine.devstack import DevStack
from segengine.layout import Layout
from segengine.settings import Settings
from segengine.worker import Worker

REPO_ROOT = Path(__file__).resolve().parents[2]

KEYS = Layout(1)  # the key names on the tests' Redis: a single primary, one bucket (segengine.layout)

Key = bytes | str | None
Value = bytes | dict[str, Any] | None


def cluster_settings(kafka: DevStack, cluster: DevCluster, **overrides: Any) -> Settings:
    """A worker's settings on the embedded broker and a Redis Cluster."""
    return Settings(kafka_bootstrap=kafka.kafka_bootstrap, redis_url=cluster.cluster_url, **overrides)


async def recount_population(store: Any) -> dict[str, dict[str, int]]:
    """Segment populations counted from every stored state (a SCAN of every primary)."""
    from collections import Counter

    from segengine.state import CustomerState

    counts: Counter[tuple[str, str]] = Counter()
    async for ids in store.scan_customers():
        for loaded in (await store.load(ids)).values():
            if loaded.blob:
                counts.update(CustomerState.loads(loaded.blob).members.items())
    out: dict[str, dict[str, int]] = {}
    for (dimension, segment), n in counts.items():
        out.setdefault(dimension, {})[segment] = n
    return out


def nonzero(population: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """A population without its zero counts (segments emptied since)."""
    return {d: {s: n for s, n in segs.items() if n} for d, segs in population.items()}


def settings_for(stack: DevStack, **overrides: Any) -> Settings:
    return Settings(kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url, **overrides)


async def produce(stack: DevStack, topic: str, records: list[tuple[Key, Value]]) -> None:
    """Produce ``(key, value)`` records in order and wait until the broker acknowledged all of them."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        acks = []
        for key, value in records:
            k = key.encode() if isinstance(key, str) else key
            v = orjson.dumps(value) if isinstance(value, dict) else value
            acks.append(await producer.send(topic, value=v, key=k))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def consume_all(
    stack: DevStack, topic: str, *, expect: int | None = None, timeout: float = 10
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning, in partition order, without a consumer group.

    Without ``expect``: up to the end offsets as they were at the call (``TimeoutError``
    if they are not reached). With ``expect``: until that many records were read, or
    ``timeout`` passed; the caller asserts on the count, so a shortfall shows there.
    """
    partitions = await _partitions(stack.kafka_bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if expect is not None and len(records) >= expect:
                break
            if expect is None and all([await consumer.position(tp) >= end[tp] for tp in tps]):
                break
            if loop.time() >= deadline:
                if expect is not None:
                    break
                positions = {tp.partition: await consumer.position(tp) for tp in tps}
                ends = {tp.partition: end[tp] for tp in tps}
                raise TimeoutError(
                    f"{topic}: read {len(records)} records in {timeout} s; positions {positions}, end offsets {ends}"
                )
            batch = await consumer.getmany(timeout_ms=100)
            for recs in batch.values():
                records.extend(recs)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0 or not described["partitions"]:
        raise LookupError(f"topic {topic!r} does not exist on {bootstrap} (error {described['error_code']})")
    return sorted(p["partition"] for p in described["partitions"])


def values(records: list[ConsumerRecord]) -> list[Any]:
    return [None if r.value is None else orjson.loads(r.value) for r in records]


class RunningWorker:
    """A worker in this process, with the totals of what it did."""

    def __init__(self, settings: Settings) -> None:
        self.records = 0
        self.worker = Worker(settings, on_batch=self._on_batch)
        self.task: asyncio.Task[None] | None = None

    def _on_batch(self, stats: Any) -> None:
        self.records += stats.records

    async def __aenter__(self) -> RunningWorker:
        self.task = asyncio.create_task(self.worker.run())
        return self

    async def wait_for(self, records: int, timeout: float = 60) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.records < records:
            assert self.task is not None
            if self.task.done():
                self.task.result()
                raise AssertionError("the worker stopped")
            if loop.time() > deadline:
                raise AssertionError(f"the worker processed {self.records} of {records} records in {timeout} s")
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        self.worker.stop()
        assert self.task is not None
        await self.task


# -- producers, drain and output checks for the adversarial tests ------------------------------


def produce_with_librdkafka(
    stack: DevStack, topic: str, records: list[tuple[str, dict[str, Any]]], timeout: float = 120
) -> None:
    """Produce with confluent-kafka (librdkafka) and its default partitioner, CRC32
    ("consistent_random"), not the JVM's murmur2: a producer the engine did not write.
    Blocking; waits until every record is acknowledged (``AssertionError`` otherwise)."""
    from confluent_kafka import Producer

    failed: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    producer = Producer(
        {"bootstrap.servers": stack.kafka_bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": False}
    )
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=orjson.dumps(value), on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(timeout)
    assert left == 0, f"librdkafka: {left} records not acknowledged in {timeout} s"
    assert not failed, f"librdkafka: {len(failed)} records failed, e.g. {failed[:3]}"


async def end_offsets(stack: DevStack, topics: list[str], timeout: float = 60) -> dict[TopicPartition, int]:
    """The offset after each partition's last record. The embedded broker reports the end of
    a partition as its last record batch's first offset + 1, so the last batch is read to
    find its last record (a broker that reports the true end gives the same answer)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in await _partitions(stack.kafka_bootstrap, t)]
        reported = dict(await consumer.end_offsets(tps))
        ends = dict(reported)
        todo = {tp for tp, end in reported.items() if end > 0}
        if todo:
            consumer.assign(list(todo))
            for tp in todo:
                consumer.seek(tp, reported[tp] - 1)
            deadline = asyncio.get_running_loop().time() + timeout
            while todo and asyncio.get_running_loop().time() < deadline:
                for tp, recs in (await consumer.getmany(*todo, timeout_ms=200)).items():
                    if recs:
                        ends[tp] = max(ends[tp], recs[-1].offset + 1)
                        todo.discard(tp)
        return ends
    finally:
        await consumer.stop()


async def committed_offsets(stack: DevStack, group_id: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """What the consumer group committed, per topic-partition (0: nothing yet). Read by a
    consumer that names the group but never joins it (it subscribes to nothing)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp: (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def wait_committed(stack: DevStack, group_id: str, *, timeout: float, alive: Any = None) -> None:
    """Until the group committed every input record produced so far (the end offsets as of
    the call). ``alive()``, when given, is called on every round: it raises when a worker
    stopped on its own."""
    from segengine.events import INPUT_TOPICS

    ends = {tp: o for tp, o in (await end_offsets(stack, list(INPUT_TOPICS))).items() if o > 0}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if alive is not None:
            alive()
        committed = await committed_offsets(stack, group_id, list(ends))
        behind = {
            f"{tp.topic}:{tp.partition}": (committed.get(tp, 0), end)
            for tp, end in ends.items()
            if committed.get(tp, 0) < end
        }
        if not behind:
            return
        if loop.time() > deadline:
            raise AssertionError(
                f"group {group_id!r} did not commit every input record in {timeout} s; (committed, end) behind: {behind}"
            )
        await asyncio.sleep(0.25)


async def wait_timers_done(
    stack: DevStack,
    until: int,
    *,
    timeout: float,
    partitions: int = 6,
    alive: Any = None,
    redis_url: str | None = None,
) -> None:
    """Until no customer's next check is due at or before ``until`` (the due loop caught up),
    on the stack's Redis or on the one ``redis_url`` names."""
    from segengine.store_redis import RedisStore, connect

    redis = connect(redis_url or stack.redis_url)
    try:
        store = RedisStore(redis)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (backlog := await store.timer_backlog(range(partitions), until)) > 0:
            if alive is not None:
                alive()
            if loop.time() > deadline:
                sets = [{m for m, _ in await store.due(p, until, 1_000_000)} for p in range(partitions)]
                customers = set().union(*sets)
                twice = sum(1 for c in customers if sum(c in s for s in sets) > 1)
                raise AssertionError(
                    f"{backlog} timer entries ({len(customers)} customers, {twice} of them in more than one partition's timer set) "
                    f"still due at or before {until} after {timeout} s: the due loop did not catch up"
                )
            await asyncio.sleep(0.25)
    finally:
        await redis.aclose()


def changes_per_customer(changes: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Change records per customer in the order published (one customer's changes share a
    partition), duplicates (same ``change_id``) dropped; and a problem for every duplicate
    whose content differs from the first copy (at-least-once allows a copy, never a different one)."""
    first: dict[str, dict[str, Any]] = {}
    per_customer: dict[str, list[dict[str, Any]]] = {}
    problems: list[str] = []
    for change in changes:
        seen = first.get(change["change_id"])
        if seen is None:
            first[change["change_id"]] = change
            per_customer.setdefault(change["customer_id"], []).append(change)
        elif seen != change:
            problems.append(f"change {change['change_id']} published twice with different content: {seen} / {change}")
    return per_customer, problems


def at_going_back(per_customer: dict[str, list[dict[str, Any]]], dimensions: Any = None) -> list[str]:
    """Customers whose published changes (of ``dimensions``, default all) go back in time."""
    problems = []
    for cid, changes in per_customer.items():
        ats = [c["at"] for c in changes if dimensions is None or c["dimension"] in dimensions]
        for before, after in zip(ats, ats[1:]):
            if after < before:  # RFC 3339 in UTC with milliseconds: text order is time order
                problems.append(f"{cid}: {before} then {after}")
                break
    return problems


# Quick consumer-group rebalances, for tests that join and leave workers often: a member
# learns of a rebalance at its next heartbeat, so that interval bounds how long a join waits.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 250, "rebalance_timeout_ms": 6000}


def rule_packs(folder: Path, *packs: str) -> Path:
    """A rules folder holding only these shipped packs (copied into ``folder``)."""
    for pack in packs:
        shutil.copy(REPO_ROOT / "rules" / pack, folder / pack)
    return folder


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition the JVM's (and aiokafka's) default partitioner picks for a key."""
    from segengine.kafka import default_partition

    return default_partition(key, partitions)


def alive(*workers: RunningWorker) -> Any:
    """A check that raises (with the worker's own error, if any) once a worker's task ended on its own."""

    def check() -> None:
        for w in workers:
            if w.task is not None and w.task.done():
                w.task.result()
                raise AssertionError("a worker stopped on its own")

    return check


def metric(worker: RunningWorker, name: str, labels: dict[str, str] | None = None) -> float:
    return worker.worker.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def purchase(event_id: str, customer: str, ts: int, amount: float) -> dict[str, Any]:
    """A purchase whose order id is its event id."""
    return {
        "event_id": event_id,
        "customer_id": customer,
        "type": "purchase",
        "ts": ts,
        "order_id": event_id,
        "amount": amount,
    }


# -- servers the tests start themselves (a TLS broker, secured Redis) ------------------------------


async def wait_listening(
    port: int, proc: subprocess.Popen[bytes], name: str, *, timeout: float = 60.0, log: Path | None = None
) -> bool:
    """True once ``port`` accepts a connection; False when ``proc`` exited meanwhile. After
    ``timeout`` s the test fails, naming the server (``name``) and showing its ``log`` if given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return True
        await asyncio.sleep(0.05)
    shown = "" if log is None else f"; its log: {log.read_text()}"
    pytest.fail(f"{name} did not listen on {port} in {timeout:.0f} s{shown}", pytrace=False)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """``proc`` terminated if it still runs; killed if it has not exited 10 s later."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def faulty_worker(point: str) -> list[str]:
    """The command of a ``segengine run`` that kills itself at ``point`` (tests/integration/faulty_worker.py)."""
    return [sys.executable, str(Path(__file__).with_name("faulty_worker.py")), point]
