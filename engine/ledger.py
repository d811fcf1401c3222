"""Redis that lost data is detected, never silently absorbed.

Kafka's committed offsets say which input records are applied; Redis holds what they did.
If Redis loses writes (flushed, restarted without persistence, restored from an older
snapshot, keys evicted), those records are not delivered again, and the customers they made
would be rebuilt from nothing, the population counts drifting. So before every commit the
worker records in Redis the offsets it is about to commit (``seg:{ledger}:committed``, never
lowered). While Redis keeps its writes the ledger is at or past every committed offset:

    ledger[tp] >= committed[tp]      for every input partition

A partition whose committed offset is past the ledger, or a ledger gone while offsets are
committed, means Redis lost what those records did: the worker stops with ``RedisLost``,
naming the partition and the recovery. Checked when partitions are assigned, before every
commit (a ledger that vanished refuses the write) and every few seconds while the worker
runs. A worker that finds a loss leaves it behind (``seg:{ledger}:lost``), so that the workers after it
do not take the customers written meanwhile for a healthy store.

``segengine rebuild`` recovers: it empties the engine's keys, sets the ledger to the
earliest offsets the input topics still hold and marks those partitions for replay
(``seg:{ledger}:rebuild``); a worker assigned a marked partition whose committed offset is past the
ledger starts it from the ledger's offset instead, and the marker goes once it commits.

Eviction is refused up front: a Redis whose ``maxmemory-policy`` may evict keys without an
expiry (``allkeys-*``) with a memory limit set is not used (the engine's keys never expire).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import RedisCluster
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from .errors import ConfigError, RedisLost
from .layout import CUSTOMER_MATCH
from .records import TopicPartition
from .store_redis import Client

log = logging.getLogger(__name__)

# One hash tag: one slot on a cluster, for the rebuild's reset of all three.
LEDGER_KEY = "seg:{ledger}:committed"  # {"topic:partition": the offset last about to be committed, "_": created}
REBUILD_KEY = "seg:{ledger}:rebuild"  # {"topic:partition": offset to replay from} after `segengine rebuild`
LOST_KEY = "seg:{ledger}:lost"  # what a worker found lost (kept until a rebuild)
RECOVERY = "stop every worker, then run `segengine rebuild` (it replays the input topics into a clean Redis)"
MISSING = "SEGENGINE_LEDGER_MISSING"

# Raise each partition's entry to the given offset, never lower it (a worker a rebalance
# left behind may still commit older offsets); refuse if the ledger is gone (Redis lost it).
# ARGV: field, offset, field, offset, ...
_RAISE = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('{MISSING}')
end
for i = 1, #ARGV, 2 do
  local now = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > now then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""


def ledger_field(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


@dataclass(slots=True)
class Verdict:
    lost: RedisLost | None = None
    replay_from: dict[TopicPartition, int] = field(default_factory=dict)  # partitions to restart (a rebuild)


class Ledger:
    def __init__(self, redis: Client) -> None:
        self.redis = redis
        self._raise = redis.register_script(_RAISE)
        self._replaying: set[TopicPartition] = set()  # marked for replay, not yet committed since

    async def before_commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record the offsets about to be committed (call it before the commit)."""
        if not offsets:
            return
        args: list[str | int] = []
        for tp, offset in offsets.items():
            args += [ledger_field(tp), offset]
        try:
            await self._raise(keys=[LEDGER_KEY], args=args)
        except ResponseError as exc:
            if MISSING not in str(exc):
                raise
            raise await self.record_loss(
                RedisLost(
                    f"the commit ledger is gone from Redis while offsets are committed: Redis lost its data; {RECOVERY}"
                )
            ) from None

    async def after_commit(self, offsets: Iterable[TopicPartition]) -> None:
        """Partitions replayed after a rebuild are done being marked once they commit."""
        if done := [tp for tp in offsets if tp in self._replaying]:
            await self.redis.hdel(REBUILD_KEY, *(ledger_field(tp) for tp in done))
            self._replaying.difference_update(done)

    async def record_loss(self, lost: RedisLost) -> RedisLost:
        """Leave the finding for the workers after this one (best effort); returns it."""
        try:
            await self.redis.set(LOST_KEY, str(lost))
        except Exception as exc:  # Redis out of reach: the next worker's checks find the loss again
            log.debug("loss not recorded: %r", exc)
        return lost

    async def check(self, committed: Mapping[TopicPartition, int], *, adopt: bool = True) -> Verdict:
        """``committed``: the group's committed offsets of some partitions (0: none yet). A fresh
        engine creates the ledger; one that ran before the ledger existed (customers stored,
        no ledger, no loss recorded) has it adopted at the committed offsets."""
        if (found := await self.redis.get(LOST_KEY)) is not None:
            return Verdict(RedisLost(found.decode() if isinstance(found, bytes) else str(found)))
        past = {tp: k for tp, k in committed.items() if k > 0}
        if not await self.redis.exists(LEDGER_KEY):
            if not past:
                await self.redis.hsetnx(LEDGER_KEY, "_", 1)
                return Verdict()
            if adopt and await self._has_customers():
                log.warning(
                    "no commit ledger in Redis: adopted at the committed offsets (an engine that ran before it)"
                )
                await self.redis.hset(LEDGER_KEY, mapping={"_": 1, **{ledger_field(tp): k for tp, k in past.items()}})
                return Verdict()
            tp, k = next(iter(past.items()))
            lost = RedisLost(
                f"Redis holds nothing of the engine, but the group has committed offsets ({ledger_field(tp)} "
                f"at {k}): Redis lost its data (flushed, restarted without persistence, another instance); {RECOVERY}"
            )
            return Verdict(await self.record_loss(lost))
        if not past:
            return Verdict()
        fields = [ledger_field(tp) for tp in past]
        recorded = await self.redis.hmget(LEDGER_KEY, fields)
        marked = await self.redis.hmget(REBUILD_KEY, fields)
        verdict = Verdict()
        for (tp, k), value, start in zip(past.items(), recorded, marked):
            at = -1 if value is None else int(value)
            if at >= k:
                continue
            if start is not None and int(start) <= max(at, 0):
                verdict.replay_from[tp] = int(start)  # rebuilt: replay this partition from there
                self._replaying.add(tp)
                continue
            lost = RedisLost(
                f"Redis has applied {ledger_field(tp)} up to offset {max(at, 0)}, but the group committed {k}: "
                f"Redis lost writes (restored from an older snapshot, or keys evicted); {RECOVERY}"
            )
            return Verdict(await self.record_loss(lost))
        return verdict

    async def _has_customers(self) -> bool:
        async for _ in self.redis.scan_iter(match=CUSTOMER_MATCH, count=1000):  # every primary of a cluster
            return True
        return False

    async def start_over(self, offsets: Mapping[TopicPartition, int]) -> None:
        """After a rebuild emptied the engine's keys: every partition replays from ``offsets``."""
        fields: dict[FieldT, EncodableT] = {ledger_field(tp): offset for tp, offset in offsets.items()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(LEDGER_KEY, REBUILD_KEY, LOST_KEY)
            pipe.hset(LEDGER_KEY, mapping={"_": 1, **fields})
            if fields:
                pipe.hset(REBUILD_KEY, mapping=fields)
            await pipe.execute()


async def refuse_eviction(redis: Client) -> None:
    """Stop with ``ConfigError`` on a Redis that may evict the engine's keys (they have no
    expiry): ``maxmemory`` set with an ``allkeys-*`` policy, on any primary of a cluster. Where
    CONFIG is not allowed (a managed Redis), say so and go on."""
    nodes: list[Any] = (
        sorted(redis.get_primaries(), key=lambda n: n.name) if isinstance(redis, RedisCluster) else [None]
    )
    for node in nodes:
        where = "" if node is None else f" {node.name}"
        target = {} if node is None else {"target_nodes": node}
        try:
            policy = (await redis.config_get("maxmemory-policy", **target)).get("maxmemory-policy", "")
            limit = int((await redis.config_get("maxmemory", **target)).get("maxmemory", 0) or 0)
        except ResponseError as exc:
            log.warning("cannot read Redis%s's eviction policy (%s): make sure it is noeviction", where, exc)
            continue
        except (RedisError, OSError) as exc:  # out of reach: the outage watch stops the worker if it stays so
            log.warning("Redis%s's eviction policy not checked: %s", where, type(exc).__name__)
            continue
        text = policy.decode() if isinstance(policy, bytes) else str(policy)
        if limit and text.startswith("allkeys"):
            raise ConfigError(
                f"Redis{where} evicts keys (maxmemory-policy {text}, maxmemory {limit}): the engine's state would "
                "be lost silently; set maxmemory-policy noeviction (or a volatile-* policy)"
            )
