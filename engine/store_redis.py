"""The only module that talks to Redis.

Each customer is one hash, ``seg:{<customer_id>}:state`` = {v: version, s: state JSON,
p: outbox JSON while it holds records not yet known committed}, hash-tagged so that all
of a customer's keys share one Redis Cluster slot.

A batch costs two round trips whatever its size: one Lua script reads all its customers
(``load.lua``), one writes them back (``save.lua``), each customer with a
compare-and-set on its version, together with the exact segment population counters.
Batching the customers into one script call instead of one command each is what keeps
the client's per-command cost (packing and parsing in Python) off the hot path.

On Redis Cluster the calls would be split per slot and the population counters kept per
slot; segengine targets a single Redis primary for now.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import AsyncIterator, Iterable

import hiredis
import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

POPULATION_KEY = "seg:population"
QUANTILES_KEY = "seg:quantiles"  # {"taken_at": ms, "samples": {feature: [sorted values]}}
FIELD_SEP = "\x1f"
CHUNK = 1000  # customers per script call: bounds how long one call holds Redis


class HiredisPackingConnection(Connection):
    """Packs commands with hiredis (C) instead of redis-py's Python packer: a batch's
    script call carries thousands of arguments."""

    def pack_command(self, *args: object) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]  # type: ignore[arg-type]


def connect(url: str) -> Redis:
    return Redis.from_url(url, connection_class=HiredisPackingConnection)


def timer_key(partition: int) -> str:
    """Due customers of one input partition: a sorted set scored by next check time (ms)."""
    return f"seg:timers:{{p{partition}}}"


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
    timer_key: str = ""  # the customer's partition's timer set
    next_check: int | None = None  # when time alone may move the customer; None: never


def _script(redis: Redis, name: str):  # type: ignore[no-untyped-def]
    return redis.register_script(files("engine").joinpath(name).read_text())


class RedisStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._load = _script(redis, "load.lua")
        self._save = _script(redis, "save.lua")
        self._outbox_done = _script(redis, "outbox_done.lua")

    async def load(self, customer_ids: Iterable[str]) -> dict[str, Loaded]:
        ids = list(customer_ids)
        loaded: dict[str, Loaded] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            flat = await self._load(keys=[state_key(c) for c in chunk])
            for i, cid in enumerate(chunk):
                v, s, p = flat[3 * i : 3 * i + 3]
                loaded[cid] = Loaded(int(v) if v else 0, s, p)
        return loaded

    async def save(self, writes: list[Write]) -> list[bool]:
        """Compare-and-set every write; False where another writer got there first."""
        done: list[bool] = []
        for start in range(0, len(writes), CHUNK):
            chunk = writes[start : start + CHUNK]
            keys = [POPULATION_KEY]
            args: list[object] = []
            for w in chunk:
                keys.append(state_key(w.customer_id))
                moves = [(f"{d}{FIELD_SEP}{s}", n) for (d, s), n in w.population.items() if n]
                due = "" if w.next_check is None else w.next_check
                args += [w.expected_version, w.blob, w.outbox, w.timer_key or timer_key(0), due, w.customer_id, len(moves)]
                for field, delta in moves:
                    args += [field, delta]
            done += [bool(r) for r in await self._save(keys=keys, args=args)]
        return done

    async def outbox_published(self, written: list[tuple[str, int]]) -> None:
        """Drop the outboxes of (customer, version) writes whose records are committed."""
        for start in range(0, len(written), CHUNK):
            chunk = written[start : start + CHUNK]
            await self._outbox_done(keys=[state_key(c) for c, _ in chunk], args=[v for _, v in chunk])

    async def population(self) -> dict[str, dict[str, int]]:
        """Exact segment populations: {dimension: {segment: customers}}, zeros included."""
        raw = await self.redis.hgetall(POPULATION_KEY)
        out: dict[str, dict[str, int]] = {}
        for field, count in raw.items():
            dimension, _, segment = (field.decode() if isinstance(field, bytes) else field).partition(FIELD_SEP)
            out.setdefault(dimension, {})[segment] = int(count)
        return out

    async def due(self, partition: int, until: int, limit: int) -> list[tuple[str, int]]:
        """Customers of a partition whose next check is at or before ``until``, earliest first."""
        rows = await self.redis.zrangebyscore(timer_key(partition), "-inf", until, start=0, num=limit, withscores=True)
        return [(m.decode() if isinstance(m, bytes) else m, int(score)) for m, score in rows]

    async def drop_timers(self, entries: list[tuple[str, str]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for key, customer_id in entries:
            pipe.zrem(key, customer_id)
        await pipe.execute()

    async def timer_backlog(self, partitions: Iterable[int], until: int) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for p in partitions:
            pipe.zcount(timer_key(p), "-inf", until)
        return sum(await pipe.execute())

    async def quantile_samples(self) -> tuple[int, dict[str, list[float]]] | None:
        raw = await self.redis.get(QUANTILES_KEY)
        if raw is None:
            return None
        doc = orjson.loads(raw)
        return int(doc["taken_at"]), doc["samples"]

    async def save_quantile_samples(self, taken_at: int, samples: dict[str, list[float]]) -> None:
        await self.redis.set(QUANTILES_KEY, orjson.dumps({"taken_at": taken_at, "samples": samples}))

    async def scan_customers(self, count: int = 1000) -> AsyncIterator[list[str]]:
        """Every customer id with a state, in chunks (SCAN: never blocks Redis for long)."""
        chunk: list[str] = []
        async for key in self.redis.scan_iter(match="seg:{*}:state", count=count):
            text = key.decode() if isinstance(key, bytes) else key
            chunk.append(text[len("seg:{") : -len("}:state")])
            if len(chunk) >= count:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    async def load_state(self, customer_id: str) -> Loaded:
        v, s, p = await self.redis.hmget(state_key(customer_id), "v", "s", "p")
        return Loaded(int(v) if v else 0, s, p)
