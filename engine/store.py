"""What the engine needs of its state store, as a protocol, and the records that cross it.

``RedisStore`` (segengine.store_redis) is the store a worker runs on; ``MemoryStore``
(segengine.store_memory) keeps the same promises in a process, for fast tests of the batch logic.
Both keep what segengine.codec encodes; neither decides anything.

The promises every store keeps:

- ``save`` is a compare-and-set per customer on the version ``load`` returned: a write whose
  expected version is not the stored one changes nothing and reports False. A successful
  write moves the segment population counters, the customer's timer and its recent changes
  in the same atomic step, and clears its quarantine mark.
- ``outbox_published`` drops an outbox only if no newer write came since (same version); an
  erased customer (a hash with no state document) goes entirely.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

HISTORY = 10  # change records kept per customer for lookups


# Loaded, Write and Published are made for every customer a batch writes: not frozen (see
# segengine.events.Source). Nothing changes them once made.
@dataclass(slots=True)
class Loaded:
    """A customer as stored: version 0 and no blob for one never written (or deleted)."""

    version: int
    blob: bytes | None
    outbox: bytes | None
    offsets: bytes | None = None  # erased, not committed yet: the applied offsets (the state is gone)


@dataclass(slots=True)
class Write:
    """One customer's compare-and-set write."""

    customer_id: str
    expected_version: int
    blob: bytes  # b"": erased (no state document until the erase is committed)
    outbox: bytes  # b"" when empty
    population: dict[tuple[str, str], int]  # (dimension, segment) -> delta
    home: int | None = None  # the customer's home partition: whose timer set holds it
    next_check: int | None = None  # when time alone may move the customer; None: never
    recent: tuple[bytes, ...] = ()  # change records for the recent changes, oldest first
    forget: bool = False  # an erase was applied: the recent changes before it go
    offsets: bytes = b""  # erased: the applied offsets, kept until the erase is committed
    # The state document the fold started from when it came from the writer's cache, not from a
    # load: the write lands only if the store still holds those very bytes (b"": the version only).
    held: bytes = b""

    @property
    def erased(self) -> bool:
        return not self.blob


@dataclass(slots=True)
class Published:
    """A write whose outbox records are published and acknowledged: its outbox can go.

    ``reschedule``: the write kept its customer due at once while its outbox waited (a timer or
    rules decision: no input record would send it again); now it gets its real ``next_check``
    (None: none) in ``home``'s timer set."""

    customer_id: str
    version: int
    home: int | None = None
    next_check: int | None = None
    reschedule: bool = False


class TimerEntry(NamedTuple):
    """A customer due for a check (its next check time, ms)."""

    customer_id: str
    due: int


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A customer set aside after ``stage`` failed on it; ``home``: its timer set, if known."""

    customer_id: str
    stage: str
    home: int | None = None


class Lookup(NamedTuple):
    """One customer for the lookup API."""

    loaded: Loaded
    recent: list[bytes]  # its recent change records, newest first
    quarantined: bytes | None  # the stage that failed, if it is quarantined


QuantileSamples = dict[str, list[float]]  # feature -> sorted sample of the population's values


class Store(Protocol):
    async def load(self, customer_ids: Iterable[str]) -> dict[str, Loaded]:
        """What each customer holds."""
        ...

    async def save(self, writes: list[Write]) -> list[bool]:
        """Compare-and-set every write; False where another writer got there first."""
        ...

    async def outbox_published(self, written: list[Published]) -> None: ...

    async def quarantine(self, entries: list[Quarantine]) -> None: ...

    async def population(self) -> dict[str, dict[str, int]]:
        """Exact segment populations: {dimension: {segment: customers}}, zeros included."""
        ...

    async def due(self, partition: int, until: int, limit: int) -> list[TimerEntry]:
        """Customers of a partition whose next check is at or before ``until``, earliest first."""
        ...

    async def drop_timers(self, partition: int, customer_ids: list[str]) -> None: ...

    async def timer_backlog(self, partitions: Iterable[int], until: int) -> int: ...

    async def next_check(self, customer_id: str, partition: int) -> int | None: ...

    async def quantile_samples(self) -> tuple[int, QuantileSamples] | None: ...

    async def save_quantile_samples(self, taken_at: int, samples: QuantileSamples) -> None: ...

    async def rescored_cuts(self, partitions: Collection[int]) -> dict[int, QuantileSamples]:
        """The population cut points each of these input partitions' customers were last
        re-scored with (a partition never re-scored is left out)."""
        ...

    async def register_reasons(self, texts: Mapping[int, str]) -> dict[int, str]:
        """Add these rule texts to the registry (segengine.reasons) where their codes are free;
        returns the text the registry holds for each code (another one where codes clash)."""
        ...

    async def reasons(self, codes: Collection[int]) -> dict[int, str]:
        """The registry's text of each of these codes it holds."""
        ...

    async def save_rescored_cuts(self, partitions: Collection[int], cuts: QuantileSamples) -> None: ...

    def scan_customers(self, count: int = 1000) -> AsyncIterator[list[str]]:
        """Every customer id the store holds (erased ones awaiting their commit included: their
        blob is None), in chunks."""
        ...

    async def scan_states(self, cursor: int, count: int) -> tuple[int, dict[str, Loaded]]:
        """One step of a scan of every customer from ``cursor`` (0: the start): about ``count``
        customers with what each holds (erased ones included: their blob is None), and the next
        cursor (0: the scan is complete). As Redis's SCAN: a customer present for the whole scan
        is returned at least once, maybe twice; a step may return none while more follow."""
        ...

    async def load_state(self, customer_id: str) -> Loaded: ...

    async def lookup(self, customer_id: str) -> Lookup: ...

    async def erasing(self) -> list[tuple[str, Loaded]]:
        """The customers whose erase awaits its commit, with what is left of them."""
        ...
