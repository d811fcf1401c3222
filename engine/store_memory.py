"""The ``Store`` promises kept in a process: the in-memory twin of ``RedisStore``, for fast tests
of the batch logic (no broker, no Redis).

It keeps what ``segengine.store_redis`` and its Lua scripts keep, with the same observable
semantics: a hash per customer {v, s, p, o, q}, its recent change records (newest first,
capped at ``HISTORY``), a timer set per partition, the population counters by (dimension,
segment) with zeros kept, and the erasing set. Every method runs to completion without
awaiting, so each call is atomic, as a Lua script is. The bytes given are the bytes returned.

``bump`` and ``lose_next`` play a concurrent writer, so that tests reach the compare-and-set retry.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .store import HISTORY, Loaded, Lookup, Published, QuantileSamples, Quarantine, TimerEntry, Write

if TYPE_CHECKING:
    from .store import Store


@dataclass(slots=True)
class _Hash:
    """A customer's hash: ``seg:{<id>}:state`` in Redis."""

    v: int
    s: bytes | None = None  # state document (absent: erased, the erase not committed yet)
    p: bytes | None = None  # outbox, absent when empty
    o: bytes | None = None  # applied offsets, only while erased
    q: bytes | None = None  # the stage that failed (quarantined)

    def loaded(self) -> Loaded:
        return Loaded(self.v, self.s, self.p, self.o)


_NONE = Loaded(0, None, None, None)


class MemoryStore:
    def __init__(self) -> None:
        self.hashes: dict[str, _Hash] = {}
        self.changes: dict[str, list[bytes]] = {}  # customer -> recent change records, newest first
        self.timers: dict[int, dict[str, int]] = {}  # partition -> {customer: next check (ms)}
        self.counters: dict[tuple[str, str], int] = {}  # (dimension, segment) -> customers; zeros kept
        self.erasing_ids: set[str] = set()
        self.quantiles: bytes | None = None  # as RedisStore keeps it: JSON {"taken_at", "samples"}
        self.rescored: dict[int, bytes] = {}  # input partition -> cut points at its last re-score
        self.reasons_held: dict[int, str] = {}  # the rule-text registry (segengine.reasons): code -> text
        self._losses: dict[str, int] = {}  # customer -> saves still to lose to another writer

    # -- a concurrent writer, for tests ----------------------------------------------------------

    def bump(self, customer_id: str) -> None:
        """Another writer wrote the customer: its version moves on and its quarantine mark goes
        (a hash with no state yet is created), so a write that expected the version before fails
        its compare-and-set."""
        found = self.hashes.get(customer_id)
        if found is None:
            self.hashes[customer_id] = _Hash(1)
        else:
            found.v += 1
            found.q = None

    def lose_next(self, customer_id: str, saves: int = 1) -> None:
        """The next ``saves`` calls of ``save`` that write this customer find it bumped just before."""
        self._losses[customer_id] = self._losses.get(customer_id, 0) + saves

    # -- the Store protocol ----------------------------------------------------------------------

    async def load(self, customer_ids: Iterable[str]) -> dict[str, Loaded]:
        return {cid: self._loaded(cid) for cid in customer_ids}

    async def save(self, writes: list[Write]) -> list[bool]:
        """Compare-and-set every write; False where another writer got there first (save.lua)."""
        return [self._save_one(w) for w in writes]

    def _save_one(self, w: Write) -> bool:
        cid = w.customer_id
        if self._losses.get(cid):
            self._losses[cid] -= 1
            self.bump(cid)
        found = self.hashes.get(cid)
        if (0 if found is None else found.v) != w.expected_version:
            return False
        if w.held and (found is None or found.s != w.held):
            return False  # the same version, other bytes: another writer's (save.lua)
        h = found if found is not None else self.hashes.setdefault(cid, _Hash(0))
        h.q = None  # quarantined until a write succeeds
        h.v += 1
        if w.erased:  # no state document until the erase is committed (then outbox_published deletes it)
            h.s, h.o = None, w.offsets
            self.erasing_ids.add(cid)
        else:
            h.s = w.blob
            if h.o is not None:  # erased, and back as a new customer
                h.o = None
                self.erasing_ids.discard(cid)
        h.p = w.outbox or None
        timers = self.timers.setdefault(0 if w.home is None else w.home, {})
        if w.next_check is None:
            timers.pop(cid, None)
        else:
            timers[cid] = w.next_check
        for key, delta in w.population.items():
            if delta:
                self.counters[key] = self.counters.get(key, 0) + delta
        if w.forget:
            self.changes.pop(cid, None)
        if w.recent:
            recent = self.changes.setdefault(cid, [])
            recent[:0] = reversed(w.recent)  # given oldest first: kept newest first
            del recent[HISTORY:]
        return True

    async def outbox_published(self, written: list[Published]) -> None:
        """Drop the outboxes no newer write replaced; delete erased customers (outbox_done.lua)."""
        for entry in written:
            cid = entry.customer_id
            found = self.hashes.get(cid)
            if (0 if found is None else found.v) != entry.version:
                continue
            if found is None or found.s is None:
                self.hashes.pop(cid, None)
                self.erasing_ids.discard(cid)
                continue
            found.p = None
            if entry.reschedule:
                timers = self.timers.setdefault(0 if entry.home is None else entry.home, {})
                if entry.next_check is None:
                    timers.pop(cid, None)
                else:
                    timers[cid] = entry.next_check

    async def quarantine(self, entries: list[Quarantine]) -> None:
        """Mark the customers' hashes (if any) and take them off their timer sets (quarantine.lua)."""
        for entry in entries:
            found = self.hashes.get(entry.customer_id)
            if found is not None:
                found.q = entry.stage.encode()
            if entry.home is not None:
                self.timers.get(entry.home, {}).pop(entry.customer_id, None)

    async def population(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (dimension, segment), count in self.counters.items():
            out.setdefault(dimension, {})[segment] = count
        return out

    async def due(self, partition: int, until: int, limit: int) -> list[TimerEntry]:
        """Earliest first; equal times in byte order of the ids, as a Redis sorted set has them."""
        rows = sorted(
            ((due, cid) for cid, due in self.timers.get(partition, {}).items() if due <= until),
            key=lambda row: (row[0], row[1].encode()),
        )
        if limit >= 0:
            rows = rows[:limit]
        return [TimerEntry(cid, due) for due, cid in rows]

    async def drop_timers(self, partition: int, customer_ids: list[str]) -> None:
        timers = self.timers.get(partition, {})
        for cid in customer_ids:
            timers.pop(cid, None)

    async def timer_backlog(self, partitions: Iterable[int], until: int) -> int:
        return sum(1 for p in partitions for due in self.timers.get(p, {}).values() if due <= until)

    async def next_check(self, customer_id: str, partition: int) -> int | None:
        return self.timers.get(partition, {}).get(customer_id)

    async def quantile_samples(self) -> tuple[int, QuantileSamples] | None:
        if self.quantiles is None:
            return None
        doc = orjson.loads(self.quantiles)
        return int(doc["taken_at"]), doc["samples"]

    async def save_quantile_samples(self, taken_at: int, samples: QuantileSamples) -> None:
        self.quantiles = orjson.dumps({"taken_at": taken_at, "samples": samples})

    async def rescored_cuts(self, partitions: Collection[int]) -> dict[int, QuantileSamples]:
        return {p: orjson.loads(self.rescored[p]) for p in partitions if p in self.rescored}

    async def save_rescored_cuts(self, partitions: Collection[int], cuts: QuantileSamples) -> None:
        self.rescored.update(dict.fromkeys(partitions, orjson.dumps(cuts)))

    async def register_reasons(self, texts: Mapping[int, str]) -> dict[int, str]:
        for code, text in texts.items():
            self.reasons_held.setdefault(code, text)
        return {code: self.reasons_held[code] for code in texts}

    async def reasons(self, codes: Collection[int]) -> dict[int, str]:
        return {code: self.reasons_held[code] for code in codes if code in self.reasons_held}

    async def scan_customers(self, count: int = 1000) -> AsyncIterator[list[str]]:
        """Every customer id with a hash (as RedisStore's SCAN of the state keys), in chunks."""
        ids = sorted(self.hashes)
        for start in range(0, len(ids), max(1, count)):
            yield ids[start : start + max(1, count)]

    async def scan_states(self, cursor: int, count: int) -> tuple[int, dict[str, Loaded]]:
        """A step of ``count`` customers in id order; the cursor is a position in that order (a
        customer added or deleted during the scan shifts the others: one may come twice, or, unlike
        SCAN, be missed)."""
        ids = sorted(self.hashes)
        end = cursor + max(1, count)
        return (end if end < len(ids) else 0), {cid: self._loaded(cid) for cid in ids[cursor:end]}

    async def load_state(self, customer_id: str) -> Loaded:
        return self._loaded(customer_id)

    async def lookup(self, customer_id: str) -> Lookup:
        found = self.hashes.get(customer_id)
        return Lookup(
            self._loaded(customer_id),
            list(self.changes.get(customer_id, [])[:HISTORY]),
            None if found is None else found.q,
        )

    async def erasing(self) -> list[tuple[str, Loaded]]:
        return [(cid, self._loaded(cid)) for cid in sorted(self.erasing_ids)]

    # -- for tests -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything stored, as plain comparable data (a copy): two stores hold the same iff equal.
        Empty timer sets are left out (Redis has no empty sorted set)."""
        return copy.deepcopy(
            {
                "hashes": {cid: (h.v, h.s, h.p, h.o, h.q) for cid, h in self.hashes.items()},
                "changes": self.changes,
                "timers": {p: t for p, t in self.timers.items() if t},
                "population": self.counters,
                "erasing": self.erasing_ids,
                "quantiles": self.quantiles,
                "rescored": self.rescored,
            }
        )

    def _loaded(self, customer_id: str) -> Loaded:
        found = self.hashes.get(customer_id)
        return _NONE if found is None else found.loaded()


if TYPE_CHECKING:
    _store: Store = MemoryStore()  # mypy: MemoryStore keeps the whole protocol
