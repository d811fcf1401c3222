"""Kafka I/O in one place: the clients the worker uses, the sink that publishes output, and the
default partitioner's formula.

The worker reads batches straight from aiokafka (``getmany``), not through faust's per-event
stream machinery, so that validation, state updates and publishing are done a batch at a time.
Offsets are committed by hand (segengine.worker.checkpoint). The input topics are co-partitioned and
assigned with the range assignor, so one worker owns all of a customer's input partitions.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.partitioner import murmur2

from .errors import PublishError
from .records import OutRecord
from .settings import Settings

KEY_CACHE = 500_000  # (topic, key) -> partition entries the sink remembers


def default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (JVM, aiokafka) partitioner picks for a key: murmur2."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=2,
        max_batch_size=1 << 20,
        max_request_size=4 << 20,
    )


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        partition_assignment_strategy=(RangePartitionAssignor,),
        max_partition_fetch_bytes=4 << 20,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        fetch_max_bytes=64 << 20,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        rebalance_timeout_ms=settings.rebalance_timeout_ms,
    )


class KafkaSink:
    """Publishes output records and returns once the broker acknowledged all of them.

    Records are grouped into one producer batch per topic-partition (the partition chosen
    from the key exactly as Kafka's default partitioner does), which costs far less per
    record than ``send()`` one by one. Order per partition is kept.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._partitions: dict[str, list[int]] = {}
        self._key_partition: dict[tuple[str, bytes], int] = {}

    async def _partition(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        if key is None:
            return partitions[0]
        cached = self._key_partition.get((topic, key))
        if cached is None:
            if len(self._key_partition) > KEY_CACHE:
                self._key_partition.clear()
            cached = self._key_partition[(topic, key)] = partitions[default_partition(key, len(partitions))]
        return cached

    async def publish(self, records: list[OutRecord]) -> None:
        grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        for topic, key, value in records:
            grouped.setdefault((topic, await self._partition(topic, key)), []).append((key, value))
        futures: list[Any] = []
        for (topic, partition), items in grouped.items():
            batch = self.producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise PublishError(f"a record for {topic} is larger than the producer's max batch size")
            if batch.record_count():
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
