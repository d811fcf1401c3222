"""The only module that talks to Redis.

Each customer is one hash, ``seg:{<customer_id>}:state`` = {v: version, s: state JSON,
p: outbox JSON while it holds records not yet known committed}, hash-tagged so that every key of a customer lands in one Redis Cluster slot. A batch
reads its customers with one pipelined round trip and writes them back with another:
each write is a compare-and-set Lua script, atomic per customer, that also moves the
exact segment population counters by the same decision.

The population hash is one key outside the customers' slots: on Redis Cluster it would
need a per-slot counter; segengine targets a single Redis primary for now.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Iterable

from redis.asyncio import Redis

POPULATION_KEY = "seg:population"
FIELD_SEP = "\x1f"


def state_key(customer_id: str) -> str:
    return f"seg:{{{customer_id}}}:state"


@dataclass(frozen=True, slots=True)
class Loaded:
    version: int
    blob: bytes | None
    outbox: bytes | None


@dataclass(frozen=True, slots=True)
class Write:
    customer_id: str
    expected_version: int
    blob: bytes
    outbox: bytes  # b"" when empty
    population: dict[tuple[str, str], int]


class RedisStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._cas = redis.register_script(files("engine").joinpath("cas.lua").read_text())
        self._outbox_done = redis.register_script(files("engine").joinpath("outbox_done.lua").read_text())

    async def load(self, customer_ids: Iterable[str]) -> dict[str, Loaded]:
        ids = list(customer_ids)
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hmget(state_key(cid), "v", "s", "p")
        rows = await pipe.execute()
        return {cid: Loaded(int(v) if v else 0, s, p) for cid, (v, s, p) in zip(ids, rows)}

    async def save(self, writes: list[Write]) -> list[bool]:
        """Compare-and-set every write; False where another writer got there first."""
        if not writes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for w in writes:
            args: list[object] = [w.expected_version, w.blob, w.outbox]
            for (dimension, segment), delta in w.population.items():
                if delta:
                    args += [f"{dimension}{FIELD_SEP}{segment}", delta]
            await self._cas(keys=[state_key(w.customer_id), POPULATION_KEY], args=args, client=pipe)
        return [bool(r) for r in await pipe.execute()]

    async def outbox_published(self, written: list[tuple[str, int]]) -> None:
        """Drop the outboxes of (customer, version) writes whose records are committed."""
        if not written:
            return
        pipe = self.redis.pipeline(transaction=False)
        for cid, version in written:
            await self._outbox_done(keys=[state_key(cid)], args=[version], client=pipe)
        await pipe.execute()

    async def population(self) -> dict[str, dict[str, int]]:
        """Exact segment populations: {dimension: {segment: customers}}."""
        raw = await self.redis.hgetall(POPULATION_KEY)
        out: dict[str, dict[str, int]] = {}
        for field, count in raw.items():
            dimension, _, segment = (field.decode() if isinstance(field, bytes) else field).partition(FIELD_SEP)
            if int(count):
                out.setdefault(dimension, {})[segment] = int(count)
        return out

    async def load_state(self, customer_id: str) -> bytes | None:
        return await self.redis.hget(state_key(customer_id), "s")
