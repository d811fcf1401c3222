"""The only module that talks to Redis.

Where the keys live is segengine.layout's: customers spread over buckets, each bucket one
hash tag (one Redis Cluster slot) holding its customers' hashes {v: version, s: state document,
p: outbox JSON while it holds records not yet known committed, h: the recent change records,
newest first}, its timer sets (one per home input partition), its share of the population
counters and its erasing set.

An erase writes the hash with no state document: only {v, o: the applied offsets, p: the
exits and the tombstone it caused}, deletes the recent changes and the timer, and lists the
customer in its bucket's erasing set. Once the erase is committed, ``outbox_done.lua``
deletes a hash that has no state document, and the customer leaves the erasing set: nothing
in Redis names it any more. (A worker that died between the commit and that step leaves the
hash; the worker's sweep of the erasing sets deletes it once the offsets in ``o`` are committed.)

A batch costs at most two round trips whatever its size: one Lua script call per bucket reads
the customers the worker does not hold in its cache (``load.lua``; none, when it holds them
all), one per bucket writes them back (``save.lua``), each customer with a compare-and-set on
its version (and, for one folded from the cache, on the bytes it started from), together with
the exact segment population counters; the calls of one step go out together. Batching the
customers into one script call instead of one command each, and a call's writes into one
argument, is what keeps the client's per-command cost (packing and parsing in Python) off the
hot path. On a single primary with one bucket that is one call per step.

The records that cross this module's boundary, and what every store promises, are in
segengine.store; the bytes it keeps are segengine.codec's.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import hiredis
import msgpack
import orjson
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.exceptions import RedisError, ResponseError

from .errors import ConfigError
from .layout import CLUSTER_BUCKETS, CUSTOMER_MATCH, LAYOUT_KEY, OLD_LAYOUT_KEYS, VERSION, Layout, customer_of
from .reasons import REASONS_KEY
from .store import HISTORY, Loaded, Lookup, Published, QuantileSamples, Quarantine, TimerEntry, Write

if TYPE_CHECKING:
    from .metrics import Metrics

# The population cut points each input partition's customers were last re-scored with: a hash,
# partition -> {feature: [cuts]} (the string key "seg:rescored" of versions before held one for all)
RESCORED_KEY = "seg:rescored:partitions"
QUANTILES_KEY = "seg:quantiles"  # {"taken_at": ms, "samples": {feature: [sorted values]}}
FIELD_SEP = "\x1f"
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
Client = Redis | RedisCluster  # a single primary, or a cluster (a redis+cluster:// URL)
CHUNK = 1000  # customers per script call: bounds how long one call holds Redis
# Bytes of documents and records per save.lua call at most (beside CHUNK): its writes go as one
# argument, which Redis takes up to 512 MB (proto-max-bulk-len), and a state may be 1 MiB.
CALL_BYTES = 64 << 20
# save.lua's argument: Redis's Lua reads MessagePack (cmsgpack) without its newer binary type,
# so bytes go as the raw type (its strings are bytes)
_pack_writes = msgpack.Packer(use_bin_type=False).pack
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


class EngineCluster(RedisCluster):
    """A cluster client for the engine's scripts, whose keys share one slot by construction
    (segengine.layout): an EVALSHA goes to its first key's slot (Redis refuses a call whose keys
    do not share it, CROSSSLOT), instead of every key being hashed in Python to check it."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command.upper() == "EVALSHA" and len(args) > 2 and int(args[1]) > 0:
            return int(self.keyslot(args[2]))
        slot: int = await super()._determine_slot(command, *args)
        return slot


def connect(url: str) -> Client:
    """A client for ``url``: ``redis://`` or ``rediss://`` (TLS), with the user and password, and
    redis-py's connection parameters (``ssl_ca_certs``, ``socket_timeout``, ...) as its query;
    a parameter given there wins over the timeouts above. ``redis+cluster://`` and
    ``rediss+cluster://`` name one node of a Redis Cluster (any: the client discovers the
    others). ``ConfigError`` if it cannot be used."""
    scheme, sep, rest = url.partition("://")
    try:
        if scheme.lower() in CLUSTER_SCHEMES:
            cluster = EngineCluster.from_url(
                f"{CLUSTER_SCHEMES[scheme.lower()]}{sep}{rest}",
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=CALL_TIMEOUT_S,
            )
            # Its nodes' connections pack with hiredis too: the shared kwargs every node is made
            # from, and the startup nodes already made.
            kwargs = cluster.connection_kwargs
            kwargs["connection_class"] = _PACKING.get(kwargs["connection_class"], kwargs["connection_class"])
            for node in cluster.nodes_manager.startup_nodes.values():
                node.connection_class = kwargs["connection_class"]
            return cluster
        client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CALL_TIMEOUT_S)
    except (TypeError, RedisError) as exc:  # a cluster's unknown parameter
        raise ConfigError(f"the Redis URL's parameters cannot be used: {exc}") from None
    except ValueError:  # its message may quote a part of the URL, which can be a part of the password
        raise ConfigError(
            "the Redis URL cannot be read: it takes the form redis://user:password@host:port/db (the user "
            "and password optional, rediss:// for TLS, redis+cluster:// for a cluster), with / ? # @ : % in "
            "them percent-encoded"
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


def _script(redis: Client, name: str):  # type: ignore[no-untyped-def]
    return redis.register_script(files(__package__ or "segengine").joinpath(name).read_text())


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
T = TypeVar("T")


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


async def read_layout(redis: Client, buckets: int | None = None) -> Layout:
    """The layout this Redis's engine data has; a Redis with none gets one (``buckets``, else
    one bucket on a single primary and ``CLUSTER_BUCKETS`` on a cluster). ``ConfigError`` for a
    cluster node reached as a single primary, a different bucket count asked for than the one
    recorded, or data of the layout before buckets."""
    if not isinstance(redis, RedisCluster) and await _cluster_node(redis):
        raise ConfigError(
            "this Redis is a node of a Redis Cluster: name it with redis+cluster:// (or rediss+cluster://)"
        )
    raw = await redis.get(LAYOUT_KEY)
    if raw is None:
        if await redis.exists(*OLD_LAYOUT_KEYS):
            raise ConfigError(
                "this Redis holds engine state in the layout of an earlier version (seg:population): stop every "
                "worker, then run `segengine rebuild` (it replays the input topics into the new layout)"
            )
        wanted = buckets or (CLUSTER_BUCKETS if isinstance(redis, RedisCluster) else 1)
        await redis.set(LAYOUT_KEY, orjson.dumps({"version": VERSION, "buckets": wanted}), nx=True)
        raw = await redis.get(LAYOUT_KEY)  # ours, or another worker's that got there first
    doc = orjson.loads(cast(bytes, raw))
    if doc.get("version") != VERSION:
        raise ConfigError(f"this Redis's engine data has layout version {doc.get('version')}, not {VERSION}")
    if buckets and buckets != doc["buckets"]:
        raise ConfigError(
            f"this Redis's engine data is spread over {doc['buckets']} buckets, not the {buckets} asked for "
            "(SEGENGINE_REDIS_BUCKETS applies only to a Redis with no engine data yet)"
        )
    return Layout(int(doc["buckets"]))


async def _cluster_node(redis: Redis) -> bool:
    try:
        return bool((await redis.info("cluster")).get("cluster_enabled"))
    except ResponseError:  # INFO not allowed to this user: a cluster node would answer MOVED soon enough
        return False


class RedisStore:
    def __init__(self, redis: Client, metrics: Metrics | None = None, *, buckets: int | None = None) -> None:
        self.redis = redis
        self.metrics = metrics  # Redis latency and errors per operation
        self.buckets = buckets  # for a Redis with no engine data yet; None: the default
        self._layout: Layout | None = None
        self._load = _script(redis, "load.lua")
        self._save = _script(redis, "save.lua")
        self._outbox_done = _script(redis, "outbox_done.lua")
        self._quarantine = _script(redis, "quarantine.lua")

    async def layout(self) -> Layout:
        """Where the keys are (read from Redis once: segengine.layout)."""
        if self._layout is None:
            self._layout = await read_layout(self.redis, self.buckets)
        return self._layout

    async def _by_bucket(self, items: Iterable[T], customer_id: Callable[[T], str]) -> list[tuple[int, list[T]]]:
        """``items`` grouped by their customer's bucket, in chunks of at most ``CHUNK``."""
        layout = await self.layout()
        groups: dict[int, list[T]] = {}
        if layout.buckets == 1:
            groups[0] = list(items)
        else:
            bucket = layout.bucket
            for item in items:
                groups.setdefault(bucket(customer_id(item)), []).append(item)
        return [(b, group[i : i + CHUNK]) for b, group in groups.items() for i in range(0, len(group), CHUNK)]

    async def _pipeline(self, fill: Callable[[Any], object]) -> list[Any]:
        """The commands ``fill`` queues, sent together (on a cluster, one batch per node, all at once)."""
        pipe = self.redis.pipeline(transaction=False)
        fill(pipe)
        replies: list[Any] = await pipe.execute()
        return replies

    @_timed("load")
    async def load(self, customer_ids: Iterable[str]) -> dict[str, Loaded]:
        layout = await self.layout()
        chunks = await self._by_bucket(customer_ids, str)
        calls = [self._load(keys=[layout.state(c, bucket) for c in chunk]) for bucket, chunk in chunks]
        loaded: dict[str, Loaded] = {}
        for (_, chunk), flat in zip(chunks, await asyncio.gather(*calls)):
            for i, cid in enumerate(chunk):
                v, s, p, o = flat[4 * i : 4 * i + 4]
                loaded[cid] = Loaded(int(v) if v else 0, s, p, o)
        return loaded

    @_timed("save")
    async def save(self, writes: list[Write]) -> list[bool]:
        """Compare-and-set every write; False where another writer got there first."""
        layout = await self.layout()
        chunks = await self._by_bucket(range(len(writes)), lambda i: writes[i].customer_id)  # positions
        calls = []
        parts: list[list[int]] = []  # the positions each call writes
        for bucket, chunk in chunks:
            for part in _by_size(chunk, writes):
                keys = [layout.population(bucket), layout.erasing(bucket)]
                rows = []
                for i in part:
                    w = writes[i]
                    cid = w.customer_id
                    keys += [layout.state(cid, bucket), layout.changes(cid, bucket), layout.timers(bucket, w.home or 0)]
                    moves = [x for (d, s), n in w.population.items() if n for x in (f"{d}{FIELD_SEP}{s}", n)]
                    check = "" if w.next_check is None else str(w.next_check)
                    forget = "1" if w.forget else ""
                    rows.append(
                        (w.expected_version, w.blob, w.outbox, check, cid, forget, w.offsets, moves, w.recent, w.held)
                    )
                calls.append(self._save(keys=keys, args=[HISTORY, _pack_writes(rows)]))
                parts.append(part)
        done = [False] * len(writes)
        for part, replies in zip(parts, await asyncio.gather(*calls)):
            for i, reply in zip(part, replies):
                done[i] = bool(reply)
        return done

    @_timed("outbox_published")
    async def outbox_published(self, written: list[Published]) -> None:
        """Drop the outboxes of writes whose records are published and acknowledged, delete the
        customers whose write was an erase, and give a timer or rules decision's customer its
        real next check (it was kept due at once while its outbox waited: see segengine.pipeline)."""
        layout = await self.layout()
        calls = []
        for bucket, chunk in await self._by_bucket(written, _customer):
            keys = [layout.erasing(bucket)]
            args: list[object] = []
            for entry in chunk:
                keys += [layout.state(entry.customer_id, bucket), layout.timers(bucket, entry.home or 0)]
                if entry.reschedule:
                    due: object = "none" if entry.next_check is None else entry.next_check
                else:
                    due = ""
                args += [entry.version, due, entry.customer_id]
            calls.append(self._outbox_done(keys=keys, args=args))
        await asyncio.gather(*calls)

    @_timed("quarantine")
    async def quarantine(self, entries: list[Quarantine]) -> None:
        """Set customers aside after a stage failed on them: see quarantine.lua."""
        layout = await self.layout()
        calls = []
        for bucket, chunk in await self._by_bucket(entries, _customer):
            keys: list[str] = []
            args: list[object] = []
            for entry in chunk:
                keys += [layout.state(entry.customer_id, bucket), layout.timers(bucket, entry.home or 0)]
                args += [entry.stage, "" if entry.home is None else "1", entry.customer_id]
            calls.append(self._quarantine(keys=keys, args=args))
        await asyncio.gather(*calls)

    @_timed("population")
    async def population(self) -> dict[str, dict[str, int]]:
        """Exact segment populations: {dimension: {segment: customers}}, zeros included (the
        buckets' shares added up)."""
        layout = await self.layout()
        shares = await self._pipeline(lambda pipe: [pipe.hgetall(layout.population(b)) for b in range(layout.buckets)])
        out: dict[str, dict[str, int]] = {}
        for share in shares:
            for field, count in share.items():
                dimension, _, segment = _text(field).partition(FIELD_SEP)
                segments = out.setdefault(dimension, {})
                segments[segment] = segments.get(segment, 0) + int(count)
        return out

    @_timed("due")
    async def due(self, partition: int, until: int, limit: int) -> list[TimerEntry]:
        """Customers of a partition whose next check is at or before ``until``, earliest first."""
        layout = await self.layout()
        replies = await self._pipeline(
            lambda pipe: [
                pipe.zrangebyscore(layout.timers(b, partition), "-inf", until, start=0, num=limit, withscores=True)
                for b in range(layout.buckets)
            ]
        )
        rows = cast(list[tuple[bytes, float]], [row for reply in replies for row in reply])
        if len(replies) > 1:
            rows = heapq.nsmallest(limit, rows, key=lambda row: (row[1], row[0]))
        return [TimerEntry(_text(m), int(score)) for m, score in rows]

    @_timed("drop_timers")
    async def drop_timers(self, partition: int, customer_ids: list[str]) -> None:
        if not customer_ids:
            return
        layout = await self.layout()
        chunks = await self._by_bucket(customer_ids, str)
        await self._pipeline(lambda pipe: [pipe.zrem(layout.timers(b, partition), *chunk) for b, chunk in chunks])

    @_timed("timer_backlog")
    async def timer_backlog(self, partitions: Iterable[int], until: int) -> int:
        layout = await self.layout()
        counts = await self._pipeline(
            lambda pipe: [
                pipe.zcount(layout.timers(b, p), "-inf", until) for p in partitions for b in range(layout.buckets)
            ]
        )
        return sum(counts)

    @_timed("quantile_samples")
    async def quantile_samples(self) -> tuple[int, QuantileSamples] | None:
        raw = await self.redis.get(QUANTILES_KEY)
        if raw is None:
            return None
        doc = orjson.loads(raw)
        return int(doc["taken_at"]), doc["samples"]

    @_timed("rescored_cuts")
    async def rescored_cuts(self, partitions: Collection[int]) -> dict[int, QuantileSamples]:
        wanted = sorted(partitions)
        if not wanted:
            return {}
        held = await self.redis.hmget(RESCORED_KEY, wanted)
        return {p: orjson.loads(raw) for p, raw in zip(wanted, held) if raw is not None}

    @_timed("register_reasons")
    async def register_reasons(self, texts: Mapping[int, str]) -> dict[int, str]:
        codes = list(texts)
        replies = await self._pipeline(
            lambda pipe: [
                *(pipe.hsetnx(REASONS_KEY, code, text.encode()) for code, text in texts.items()),
                pipe.hmget(REASONS_KEY, codes),
            ]
        )
        return {code: _text(text) for code, text in zip(codes, replies[-1]) if text is not None}

    @_timed("reasons")
    async def reasons(self, codes: Collection[int]) -> dict[int, str]:
        if not codes:
            return {}
        wanted = list(codes)
        held = await self.redis.hmget(REASONS_KEY, wanted)
        return {code: _text(text) for code, text in zip(wanted, held) if text is not None}

    @_timed("save_rescored_cuts")
    async def save_rescored_cuts(self, partitions: Collection[int], cuts: QuantileSamples) -> None:
        if partitions:
            await self.redis.hset(RESCORED_KEY, mapping=dict.fromkeys(sorted(partitions), orjson.dumps(cuts)))

    @_timed("save_quantile_samples")
    async def save_quantile_samples(self, taken_at: int, samples: dict[str, list[float]]) -> None:
        await self.redis.set(QUANTILES_KEY, orjson.dumps({"taken_at": taken_at, "samples": samples}))

    async def scan_customers(self, count: int = 1000) -> AsyncIterator[list[str]]:
        """Every customer id with a hash (erased ones awaiting their commit included), in chunks
        (SCAN, on every primary of a cluster: never blocks Redis for long)."""
        chunk: list[str] = []
        async for key in self.redis.scan_iter(match=CUSTOMER_MATCH, count=count):
            if (cid := customer_of(key)) is not None:
                chunk.append(cid)
            if len(chunk) >= count:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    @_timed("scan_states")
    async def scan_states(self, cursor: int, count: int) -> tuple[int, dict[str, Loaded]]:
        """One SCAN step over the customers' hashes from ``cursor`` (COUNT ``count``: a hint, Redis
        may return a few more or none), then what each holds. On a cluster the cursor also says
        which primary (in address order) the step is on: ``node cursor * NODES + node index``."""
        if isinstance(self.redis, RedisCluster):
            nodes = sorted(self.redis.get_primaries(), key=lambda n: n.name)
            node, at = cursor % NODES, cursor // NODES
            if node >= len(nodes):
                raise ValueError("this cursor is not one of this cluster's (its primaries changed?)")
            found: Any = await self.redis.scan(cursor=at, match=CUSTOMER_MATCH, count=count, target_nodes=nodes[node])
            after, keys = found[nodes[node].name]  # {node name: (cursor, keys)}
            # this primary done: the next one's start, or the end
            following = int(after) * NODES + node if after else (node + 1) % len(nodes)
        else:
            following, keys = await self.redis.scan(cursor=cursor, match=CUSTOMER_MATCH, count=count)
        ids = [cid for k in keys if (cid := customer_of(k)) is not None]
        return int(following), (await self.load(ids) if ids else {})

    @_timed("load_state")
    async def load_state(self, customer_id: str) -> Loaded:
        layout = await self.layout()
        row = cast(list[bytes | None], await self.redis.hmget(layout.state(customer_id), ["v", "s", "p", "o"]))
        v, s, p, o = row
        return Loaded(int(v) if v else 0, s, p, o)

    @_timed("lookup")
    async def lookup(self, customer_id: str) -> Lookup:
        """One customer for the lookup API: its hash, its recent change records (newest
        first) and, if it is quarantined, the stage that failed, in one round trip."""
        layout = await self.layout()
        (v, s, p, o, q, h), listed = await self._pipeline(
            lambda pipe: (
                pipe.hmget(layout.state(customer_id), ["v", "s", "p", "o", "q", "h"]),
                pipe.lrange(layout.changes(customer_id), 0, HISTORY - 1),  # as versions before kept them
            )
        )
        recent = [*recent_entries(h or b""), *listed][:HISTORY]
        return Lookup(Loaded(int(v) if v else 0, s, p, o), recent, q)

    @_timed("next_check")
    async def next_check(self, customer_id: str, partition: int) -> int | None:
        """The customer's next check time (ms) in its home partition's timer set, or None."""
        layout = await self.layout()
        due = await self.redis.zscore(layout.timers(layout.bucket(customer_id), partition), customer_id)
        return None if due is None else int(due)

    @_timed("erasing")
    async def erasing(self) -> list[tuple[str, Loaded]]:
        """The customers whose erase awaits its commit, with what is left of them."""
        layout = await self.layout()
        members = await self._pipeline(lambda pipe: [pipe.smembers(layout.erasing(b)) for b in range(layout.buckets)])
        ids = sorted(_text(m) for share in members for m in share)
        if not ids:
            return []
        loaded = await self.load(ids)
        return [(cid, loaded[cid]) for cid in ids]


NODES = 1024  # a cluster scan cursor's node part (a cluster has at most this many primaries here)


def _customer(record: Write | Published | Quarantine) -> str:
    return record.customer_id


def _by_size(positions: list[int], writes: list[Write]) -> Iterator[list[int]]:
    """``positions`` in runs whose writes carry at most ``CALL_BYTES`` of documents and records
    (at least one write each): save.lua gets a run's writes as one argument."""
    run: list[int] = []
    size = 0
    for i in positions:
        w = writes[i]
        n = len(w.blob) + len(w.outbox) + len(w.offsets) + len(w.held) + sum(map(len, w.recent))
        if run and size + n > CALL_BYTES:
            yield run
            run, size = [], 0
        run.append(i)
        size += n
    if run:
        yield run


def _text(member: bytes | str) -> str:
    return member.decode() if isinstance(member, bytes) else member


def recent_entries(blob: bytes) -> list[bytes]:
    """The entries of a customer's recent changes as ``save.lua`` keeps them in field ``h``:
    newest first, each after its length (2 bytes, big-endian)."""
    entries, pos = [], 0
    while pos + 2 <= len(blob):
        size = int.from_bytes(blob[pos : pos + 2], "big")
        entries.append(blob[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return entries
