"""The only module that talks to Redis.

Each customer is one hash, ``seg:{<customer_id>}:state`` = {v: version, s: state JSON,
p: outbox JSON while it holds records not yet known committed}, hash-tagged so that all
of a customer's keys share one Redis Cluster slot; beside it ``seg:{<customer_id>}:changes``,
its last ``HISTORY`` change records (newest first), and its member in its partition's timer
set ``seg:timers:{p<N>}``.

An erase writes the hash with no state document: only {v, o: the applied offsets, p: the
exits and the tombstone it caused}, deletes the recent changes and the timer, and lists the
customer in ``seg:erasing``. Once the erase is committed, ``outbox_done.lua`` deletes a hash
that has no state document, and the customer leaves ``seg:erasing``: nothing in Redis names
it any more. (A worker that died between the commit and that step leaves the hash; the
worker's sweep of ``seg:erasing`` deletes it once the offsets in ``o`` are committed.)

A batch costs two round trips whatever its size: one Lua script reads all its customers
(``load.lua``), one writes them back (``save.lua``), each customer with a
compare-and-set on its version, together with the exact segment population counters.
Batching the customers into one script call instead of one command each is what keeps
the client's per-command cost (packing and parsing in Python) off the hot path.

On Redis Cluster the calls would be split per slot and the population counters kept per
slot; segengine targets a single Redis primary for now.

The records that cross this module's boundary, and what every store promises, are in
segengine.store; the bytes it keeps are segengine.codec's.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import hiredis
import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.exceptions import RedisError

from .errors import ConfigError
from .store import HISTORY, Loaded, Lookup, Published, QuantileSamples, Quarantine, TimerEntry, Write

if TYPE_CHECKING:
    from .metrics import Metrics

POPULATION_KEY = "seg:population"
RESCORED_KEY = "seg:rescored"  # the population cut points at the last re-score: {feature: [cuts]}
QUANTILES_KEY = "seg:quantiles"  # {"taken_at": ms, "samples": {feature: [sorted values]}}
FIELD_SEP = "\x1f"
ERASING_KEY = "seg:erasing"  # customers erased, their erase not yet committed
CHUNK = 1000  # customers per script call: bounds how long one call holds Redis
CONNECT_TIMEOUT_S = 5.0  # a host that does not answer (blackholed, firewalled) fails this soon
# The longest wait to send one command or read its answer. A script call sends or reads at most
# CHUNK customers of at most 1 MiB each (the state cap): about 1 GiB, some 10 s over a 1 Gbit/s
# link, and as long again behind another worker's call. Without a limit, a connection cut
# mid-call (no reset ever arrives) would hold the batch, and a worker's stop, for many minutes.
CALL_TIMEOUT_S = 60.0


class HiredisPackingConnection(Connection):
    """Packs commands with hiredis (C) instead of redis-py's Python packer: a batch's
    script call carries thousands of arguments."""

    def pack_command(self, *args: object) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]  # type: ignore[arg-type]


class HiredisPackingSSLConnection(HiredisPackingConnection, SSLConnection):
    """The same packing over TLS (``rediss://``)."""


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: HiredisPackingConnection,
    SSLConnection: HiredisPackingSSLConnection,
}


def connect(url: str) -> Redis:
    """A client for ``url``: ``redis://`` or ``rediss://`` (TLS), with the user and password, and
    redis-py's connection parameters (``ssl_ca_certs``, ``socket_timeout``, ...) as its query;
    a parameter given there wins over the timeouts above. ``ConfigError`` if it cannot be used."""
    try:
        client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CALL_TIMEOUT_S)
    except ValueError:  # its message may quote a part of the URL, which can be a part of the password
        raise ConfigError(
            "the Redis URL cannot be read: it takes the form redis://user:password@host:port/db (the user "
            "and password optional, rediss:// for TLS), with / ? # @ : % in them percent-encoded"
        ) from None
    # The URL's scheme chose the connection class (redis-py's asyncio pool lets it win over a
    # connection_class given beside it): its packing twin takes its place, before any connection.
    pool = client.connection_pool
    pool.connection_class = _PACKING.get(pool.connection_class, pool.connection_class)
    try:
        pool.connection_class(**pool.connection_kwargs)  # only built, not connected: checks the parameters
    except (TypeError, RedisError) as exc:  # an unknown parameter's name, an invalid ssl_cert_reqs: never a secret
        tls = " (TLS parameters need rediss://)" if urlsplit(url).scheme == "redis" and "ssl" in str(exc) else ""
        raise ConfigError(f"the Redis URL's parameters cannot be used: {exc}{tls}") from None
    return client


def timer_key(partition: int) -> str:
    """Due customers of one input partition: a sorted set scored by next check time (ms)."""
    return f"seg:timers:{{p{partition}}}"


def state_key(customer_id: str) -> str:
    return f"seg:{{{customer_id}}}:state"


def changes_key(customer_id: str) -> str:
    """The customer's last ``HISTORY`` change records, newest first (a capped list)."""
    return f"seg:{{{customer_id}}}:changes"


def _script(redis: Redis, name: str):  # type: ignore[no-untyped-def]
    return redis.register_script(files(__package__ or "segengine").joinpath(name).read_text())


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _timed(command: str) -> Callable[[F], F]:
    """Time a store operation (one script call or pipeline per chunk) on the store's metrics, if it has any."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def timed(self: RedisStore, *args: Any, **kwargs: Any) -> Any:
            if self.metrics is None:
                return await method(self, *args, **kwargs)
            with self.metrics.redis_call(command):
                return await method(self, *args, **kwargs)

        return timed  # type: ignore[return-value]

    return wrap


class RedisStore:
    def __init__(self, redis: Redis, metrics: Metrics | None = None) -> None:
        self.redis = redis
        self.metrics = metrics  # Redis latency and errors per operation
        self._load = _script(redis, "load.lua")
        self._save = _script(redis, "save.lua")
        self._outbox_done = _script(redis, "outbox_done.lua")
        self._quarantine = _script(redis, "quarantine.lua")

    @_timed("load")
    async def load(self, customer_ids: Iterable[str]) -> dict[str, Loaded]:
        ids = list(customer_ids)
        loaded: dict[str, Loaded] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            flat = await self._load(keys=[state_key(c) for c in chunk])
            for i, cid in enumerate(chunk):
                v, s, p, o = flat[4 * i : 4 * i + 4]
                loaded[cid] = Loaded(int(v) if v else 0, s, p, o)
        return loaded

    @_timed("save")
    async def save(self, writes: list[Write]) -> list[bool]:
        """Compare-and-set every write; False where another writer got there first."""
        done: list[bool] = []
        for start in range(0, len(writes), CHUNK):
            chunk = writes[start : start + CHUNK]
            keys = [POPULATION_KEY, ERASING_KEY]
            args: list[object] = [HISTORY]
            for w in chunk:
                keys += [state_key(w.customer_id), changes_key(w.customer_id)]
                moves = [(f"{d}{FIELD_SEP}{s}", n) for (d, s), n in w.population.items() if n]
                due = "" if w.next_check is None else w.next_check
                args += [
                    w.expected_version,
                    w.blob,
                    w.outbox,
                    timer_key(0 if w.home is None else w.home),
                    due,
                    w.customer_id,
                    len(moves),
                    len(w.recent),
                ]
                args += ["1" if w.forget else "", w.offsets]
                for field, delta in moves:
                    args += [field, delta]
                args += w.recent
            done += [bool(r) for r in await self._save(keys=keys, args=args)]
        return done

    @_timed("outbox_published")
    async def outbox_published(self, written: list[Published]) -> None:
        """Drop the outboxes of writes whose records are published and acknowledged, delete the
        customers whose write was an erase, and give a timer or rules decision's customer its
        real next check (it was kept due at once while its outbox waited: see segengine.pipeline)."""
        for start in range(0, len(written), CHUNK):
            chunk = written[start : start + CHUNK]
            args: list[object] = []
            for entry in chunk:
                if entry.reschedule:
                    timers = timer_key(0 if entry.home is None else entry.home)
                    due: object = "none" if entry.next_check is None else entry.next_check
                else:
                    timers, due = "", ""
                args += [entry.version, timers, due]
            await self._outbox_done(keys=[ERASING_KEY, *(state_key(e.customer_id) for e in chunk)], args=args)

    @_timed("quarantine")
    async def quarantine(self, entries: list[Quarantine]) -> None:
        """Set customers aside after a stage failed on them: see quarantine.lua."""
        for start in range(0, len(entries), CHUNK):
            chunk = entries[start : start + CHUNK]
            args: list[object] = []
            for entry in chunk:
                args += [entry.stage, "" if entry.home is None else timer_key(entry.home), entry.customer_id]
            await self._quarantine(keys=[state_key(e.customer_id) for e in chunk], args=args)

    @_timed("population")
    async def population(self) -> dict[str, dict[str, int]]:
        """Exact segment populations: {dimension: {segment: customers}}, zeros included."""
        raw = await self.redis.hgetall(POPULATION_KEY)
        out: dict[str, dict[str, int]] = {}
        for field, count in raw.items():
            dimension, _, segment = (field.decode() if isinstance(field, bytes) else field).partition(FIELD_SEP)
            out.setdefault(dimension, {})[segment] = int(count)
        return out

    @_timed("due")
    async def due(self, partition: int, until: int, limit: int) -> list[TimerEntry]:
        """Customers of a partition whose next check is at or before ``until``, earliest first."""
        rows = cast(  # withscores: (member, score) pairs; bytes, as the client does not decode
            list[tuple[bytes, float]],
            await self.redis.zrangebyscore(timer_key(partition), "-inf", until, start=0, num=limit, withscores=True),
        )
        return [TimerEntry(_text(m), int(score)) for m, score in rows]

    @_timed("drop_timers")
    async def drop_timers(self, partition: int, customer_ids: list[str]) -> None:
        if customer_ids:
            await self.redis.zrem(timer_key(partition), *customer_ids)

    @_timed("timer_backlog")
    async def timer_backlog(self, partitions: Iterable[int], until: int) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for p in partitions:
            pipe.zcount(timer_key(p), "-inf", until)
        return sum(await pipe.execute())

    @_timed("quantile_samples")
    async def quantile_samples(self) -> tuple[int, QuantileSamples] | None:
        raw = await self.redis.get(QUANTILES_KEY)
        if raw is None:
            return None
        doc = orjson.loads(raw)
        return int(doc["taken_at"]), doc["samples"]

    @_timed("rescored_cuts")
    async def rescored_cuts(self) -> dict[str, list[float]] | None:
        raw = await self.redis.get(RESCORED_KEY)
        cuts: QuantileSamples | None = None if raw is None else orjson.loads(raw)
        return cuts

    @_timed("save_rescored_cuts")
    async def save_rescored_cuts(self, cuts: dict[str, list[float]]) -> None:
        await self.redis.set(RESCORED_KEY, orjson.dumps(cuts))

    @_timed("save_quantile_samples")
    async def save_quantile_samples(self, taken_at: int, samples: dict[str, list[float]]) -> None:
        await self.redis.set(QUANTILES_KEY, orjson.dumps({"taken_at": taken_at, "samples": samples}))

    async def scan_customers(self, count: int = 1000) -> AsyncIterator[list[str]]:
        """Every customer id with a hash (erased ones awaiting their commit included), in chunks
        (SCAN: never blocks Redis for long)."""
        chunk: list[str] = []
        async for key in self.redis.scan_iter(match="seg:{*}:state", count=count):
            text = key.decode() if isinstance(key, bytes) else key
            chunk.append(text[len("seg:{") : -len("}:state")])
            if len(chunk) >= count:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    @_timed("scan_states")
    async def scan_states(self, cursor: int, count: int) -> tuple[int, dict[str, Loaded]]:
        """One SCAN step over the customers' hashes from ``cursor`` (COUNT ``count``: a hint, Redis
        may return a few more or none), then what each holds, in one load script call."""
        after, keys = await self.redis.scan(cursor=cursor, match="seg:{*}:state", count=count)
        ids = [_text(k)[len("seg:{") : -len("}:state")] for k in keys]
        if not ids:
            return int(after), {}
        flat = await self._load(keys=[state_key(c) for c in ids])
        states: dict[str, Loaded] = {}
        for i, cid in enumerate(ids):
            v, s, p, o = flat[4 * i : 4 * i + 4]
            states[cid] = Loaded(int(v) if v else 0, s, p, o)
        return int(after), states

    @_timed("load_state")
    async def load_state(self, customer_id: str) -> Loaded:
        row = cast(list[bytes | None], await self.redis.hmget(state_key(customer_id), "v", "s", "p", "o"))
        v, s, p, o = row
        return Loaded(int(v) if v else 0, s, p, o)

    @_timed("lookup")
    async def lookup(self, customer_id: str) -> Lookup:
        """One customer for the lookup API: its hash, its recent change records (newest
        first) and, if it is quarantined, the stage that failed, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(state_key(customer_id), "v", "s", "p", "o", "q")
        pipe.lrange(changes_key(customer_id), 0, HISTORY - 1)
        (v, s, p, o, q), recent = await pipe.execute()
        return Lookup(Loaded(int(v) if v else 0, s, p, o), list(recent), q)

    @_timed("next_check")
    async def next_check(self, customer_id: str, partition: int) -> int | None:
        """The customer's next check time (ms) in its home partition's timer set, or None."""
        due = await self.redis.zscore(timer_key(partition), customer_id)
        return None if due is None else int(due)

    @_timed("erasing")
    async def erasing(self) -> list[tuple[str, Loaded]]:
        """The customers whose erase awaits its commit, with what is left of them."""
        ids = sorted(m.decode() if isinstance(m, bytes) else m for m in await self.redis.smembers(ERASING_KEY))
        if not ids:
            return []
        loaded = await self.load(ids)
        return [(cid, loaded[cid]) for cid in ids]


def _text(member: bytes | str) -> str:
    return member.decode() if isinstance(member, bytes) else member
