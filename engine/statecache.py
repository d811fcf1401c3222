"""The worker's cache of the customers it wrote last, decoded, in front of the store.

A batch reads its customers from the store (one call) and decodes each state document; most
customers a worker sees it wrote itself a little earlier, and decoding the document again
took about 22 µs each with every shipped pack (compiled). The cache keeps, for the customers written
last (at most ``limit``), the row as the write left it in the store and the state object the
fold left behind, which is that row decoded.

The store stays the one source of truth, and every use is checked against it, where it counts:
at the write. A batch folds a cached customer from the row its last write left, without
reading it from the store, and the write names the document it started from
(segengine.store: ``Write.held``); the store writes it only where it holds that version with
those very bytes, in the same compare-and-set. A write by another worker, a rebuild, an erase
and a customer made again after it at the same version, a Redis that lost data: each leaves
another version or other bytes, or none; the write loses, nothing it made is published, and
the customer is read from the store and folded again. A state is taken out while a batch
folds it (the fold changes it in place) and put back only once its write succeeded: a fold
that failed, or a write that lost its compare-and-set, leaves nothing behind. Erased
customers are never held.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from .state import CustomerState
from .store import Loaded, Published


class StateCache:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # customers held at most (0: none)
        self._held: dict[str, tuple[Loaded, CustomerState]] = {}  # oldest first
        self.hits = 0  # states taken from the cache, and written
        self.misses = 0  # taken, but the store held something else: the write lost, read from the store

    def __len__(self) -> int:
        return len(self._held)

    def take(self, customer_ids: Iterable[str]) -> tuple[dict[str, Loaded], dict[str, CustomerState]]:
        """The rows (as their writes left them in the store) and the states held of these
        customers, taken out of the cache in one pass: a batch folds them unread, each state
        changed in place, each write naming the document it started from."""
        held = self._held
        rows: dict[str, Loaded] = {}
        states: dict[str, CustomerState] = {}
        for cid in customer_ids:
            entry = held.pop(cid, None)
            if entry is not None:
                rows[cid], states[cid] = entry
        self.hits += len(states)
        return rows, states

    def refuted(self, count: int) -> None:
        """``count`` states taken unread were not what the store held (their writes lost):
        counted as misses, not hits."""
        self.hits -= count
        self.misses += count

    def peek(self, customer_id: str) -> tuple[Loaded, CustomerState] | None:
        """The row and state held of a customer, left in place (for checks: never fold it)."""
        return self._held.get(customer_id)

    def put(self, customer_id: str, row: Loaded, state: CustomerState) -> None:
        """``state`` as the store now holds it (``row``: what a load would return), after a write."""
        if self.limit <= 0:
            return
        if not state.pending:
            state.outbox_writer = None  # as an empty outbox, absent from the store, decodes
        held = self._held
        held.pop(customer_id, None)  # put back last: the oldest come first
        held[customer_id] = (row, state)
        if len(held) > self.limit:
            for old in list(itertools.islice(held, len(held) - self.limit)):
                del held[old]

    def published(self, written: Iterable[Published]) -> None:
        """These writes' outboxes are dropped from the store (``Store.outbox_published``, which
        drops one only if no other write came since): drop them here too."""
        held = self._held
        for entry in written:
            found = held.get(entry.customer_id)
            if found is None or found[0].version != entry.version:
                continue
            row, state = found
            held[entry.customer_id] = (Loaded(row.version, row.blob, None, None), state)
            state.pending = []
            state.outbox_writer = None

    def clear(self) -> None:
        self._held.clear()
