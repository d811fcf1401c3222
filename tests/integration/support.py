"""Helpers for integration tests on the real embedded stack."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from engine.devstack import DevStack
from engine.settings import Settings
from engine.worker import Worker

Key = bytes | str | None
Value = bytes | dict[str, Any] | None


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
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
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
                raise TimeoutError(f"{topic}: read {len(records)} records in {timeout} s; positions {positions}, end offsets {ends}")
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
