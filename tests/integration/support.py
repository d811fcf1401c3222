"""Helpers for integration tests on the real embedded stack."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from engine.devstack import DevStack
from engine.settings import Settings
from engine.worker import Worker


def settings_for(stack: DevStack, **overrides: Any) -> Settings:
    return Settings(kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url, **overrides)


async def produce(stack: DevStack, topic: str, records: list[tuple[bytes | str | None, bytes | dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for key, value in records:
            k = key.encode() if isinstance(key, str) else key
            v = orjson.dumps(value) if isinstance(value, dict) else value
            futures.append(await producer.send(topic, value=v, key=k))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_all(stack: DevStack, topic: str, *, expect: int | None = None, timeout: float = 15) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning (up to the end offsets, or ``expect`` records)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            end = await consumer.end_offsets(tps)
            if expect is None and all([await consumer.position(tp) >= end[tp] for tp in tps]):
                break
            if expect is not None and len(records) >= expect:
                break
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - first metadata for this topic
    return consumer.partitions_for_topic(topic) or set()


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
