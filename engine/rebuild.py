"""Recovery from a Redis that lost data (segengine.ledger): empty the engine's keys and
make the workers replay the input topics from the earliest offsets the broker still holds.

Run it with every worker stopped: it refuses while the consumer group has members. What
the topics' retention already deleted cannot come back; the rebuilt state then lacks those
records, and the report names the partitions concerned. Decisions are taken again as the
records are replayed: event-caused changes come out again with the same ``change_id``s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from .errors import SegengineError
from .events import INPUT_TOPICS
from .ledger import Ledger
from .records import TopicPartition
from .store_redis import Client

log = logging.getLogger(__name__)

ENGINE_KEYS = "seg:*"
UNLINK_CHUNK = 1000


class GroupBusy(SegengineError):
    """The consumer group still has members: workers are running."""


@dataclass(slots=True)
class Rebuilt:
    keys_removed: int = 0
    replay_from: dict[TopicPartition, int] = field(default_factory=dict)  # earliest offsets kept
    records: int = 0  # records the workers will replay
    truncated: dict[TopicPartition, int] = field(default_factory=dict)  # partitions whose start retention deleted


async def group_members(
    bootstrap: str, group_id: str, *, wait_s: float, security: Mapping[str, Any] | None = None
) -> int:
    """Members of the consumer group, waiting up to ``wait_s`` for stopped ones to time out."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            described = await admin.describe_consumer_groups([group_id])
            members = sum(len(group[5]) for response in described for group in response.groups if group[1] == group_id)
            if not members or loop.time() >= deadline:
                return members
            await asyncio.sleep(1.0)
    finally:
        await admin.close()


async def input_offsets(
    bootstrap: str, security: Mapping[str, Any] | None = None
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """The earliest and the end offsets of every input partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        described = await admin.describe_topics(list(INPUT_TOPICS))
    finally:
        await admin.close()
    tps = [KafkaTopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **(security or {}))
    await consumer.start()
    try:
        first = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return (
        {TopicPartition(tp.topic, tp.partition): o for tp, o in first.items()},
        {TopicPartition(tp.topic, tp.partition): o for tp, o in end.items()},
    )


async def empty_engine_keys(redis: Client, progress: Callable[[int], None] | None = None) -> int:
    """UNLINK every ``seg:*`` key (SCAN: Redis is never blocked for long); returns how many."""
    removed = 0
    batch: list[bytes | str] = []
    async for key in redis.scan_iter(match=ENGINE_KEYS, count=UNLINK_CHUNK):
        batch.append(key)
        if len(batch) >= UNLINK_CHUNK:
            removed += await redis.unlink(*batch)
            batch.clear()
            if progress is not None:
                progress(removed)
    if batch:
        removed += await redis.unlink(*batch)
        if progress is not None:
            progress(removed)
    return removed


async def rebuild(
    redis: Client,
    bootstrap: str,
    group_id: str,
    *,
    wait_s: float,
    progress: Callable[[int], None] | None = None,
    security: Mapping[str, Any] | None = None,
) -> Rebuilt:
    """Empty the engine's keys and mark every input partition for replay from its earliest
    offset. Raises ``GroupBusy`` while the group has members."""
    if members := await group_members(bootstrap, group_id, wait_s=wait_s, security=security):
        raise GroupBusy(f"the consumer group {group_id} has {members} members: stop every worker first")
    first, end = await input_offsets(bootstrap, security)
    done = Rebuilt(replay_from=first)
    done.records = sum(end[tp] - first[tp] for tp in first)
    done.truncated = {tp: o for tp, o in first.items() if o > 0}
    done.keys_removed = await empty_engine_keys(redis, progress)
    await Ledger(redis).start_over(first)
    log.info("rebuild: %d keys removed, %d records to replay", done.keys_removed, done.records)
    return done
