"""The worker's cache of the customers it wrote last, decoded, in front of the store.

A batch reads its customers from the store (one call) and decodes each state document; most
customers a worker sees it wrote itself a little earlier, and decoding the document again
took about 22 µs each with every shipped pack (compiled). The cache keeps, for the customers written
last (at most ``limit``), the row as the write left it in the store and the state object the
fold left behind, which is that row decoded.

The store stays the one source of truth, and every use is checked against it: a load names
the documents the caller holds (segengine.store: ``held``), and the store sends a document
back only where it holds another one; where it holds that one, the row comes back with the
caller's very bytes, and the cached state is taken only if the outbox and the erased offsets
match too. A write by another worker, a rebuild, an erase and a customer made again after
it, a Redis that lost data: each leaves other bytes, or none, and the state is decoded from
what is stored. A state is taken out while a batch folds it (the fold changes it in place)
and put back only once its write succeeded: a fold that failed, or a write that lost its
compare-and-set, leaves nothing behind. Erased customers are never held.
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
        self.hits = 0  # states taken from the cache
        self.misses = 0  # held, but the store held something else: decoded from the store's row

    def __len__(self) -> int:
        return len(self._held)

    def documents(self, customer_ids: Iterable[str]) -> dict[str, bytes]:
        """The state documents held of these customers: what a load checks against the store's."""
        held = self._held
        return {cid: held[cid][0].blob for cid in customer_ids if cid in held}  # type: ignore[misc]

    def peek(self, customer_id: str) -> tuple[Loaded, CustomerState] | None:
        """The row and state held of a customer, left in place (for checks: never fold it)."""
        return self._held.get(customer_id)

    def take(self, customer_id: str, loaded: Loaded) -> CustomerState | None:
        """The customer's state as ``loaded`` (the store's row, just read) holds it, if held;
        it leaves the cache (the caller changes it in place)."""
        entry = self._held.pop(customer_id, None)
        if entry is None:
            return None
        row, state = entry
        if loaded.blob is row.blob and loaded.outbox == row.outbox and loaded.offsets is None:
            self.hits += 1
            return state
        self.misses += 1
        return None

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
