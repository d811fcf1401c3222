"""Fixtures on the real embedded stack: a tansu broker and a redis-server on free
loopback ports, fresh for each test so that tests cannot see each other's records or
keys (a start takes well under a second).

``produce`` and ``consume_all`` are plain functions; the fixtures of the same names
hand them to tests, which should not import from a conftest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

from engine.devstack import DevStack

log = logging.getLogger(__name__)

Key = bytes | str | None
Value = bytes | dict[str, Any] | None


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    s = DevStack()
    started = time.monotonic()
    try:
        await s.start()
    except Exception as exc:  # a stack that cannot start is a failure, never a skip
        pytest.fail(f"the embedded stack (tansu + redis-server) did not start: {exc}", pytrace=False)
    log.info("embedded stack started in %.3f s", time.monotonic() - started)
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def redis_client(stack: DevStack) -> AsyncIterator[Redis]:
    client = Redis.from_url(stack.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


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


@pytest.fixture(name="produce")
def produce_fixture() -> Callable[[DevStack, str, list[tuple[Key, Value]]], Awaitable[None]]:
    return produce


@pytest.fixture(name="consume_all")
def consume_all_fixture() -> Callable[..., Awaitable[list[ConsumerRecord[bytes, bytes]]]]:
    return consume_all
