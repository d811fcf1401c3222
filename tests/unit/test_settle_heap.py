"""The worker's garbage-collector tuning (``segengine run``, segengine.heap): what exists at start
is frozen out of collections, young collections are rarer, and cycles made afterwards are still
collected; what a batch leaves alive is frozen after it, and a sweep frees the cycles among
frozen objects."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from segengine import heap
from segengine.heap import GC_THRESHOLDS, after_batch, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        heap._Managed.settled = False


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.mark.usefixtures("restored_gc")
def test_the_heap_at_start_is_frozen_and_young_collections_are_rarer() -> None:
    before = _Node()  # tracked by the collector until the freeze
    assert any(o is before for o in gc.get_objects())
    settle_heap()
    assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] > 700
    assert gc.get_freeze_count() > 0
    assert all(o is not before for o in gc.get_objects())  # frozen: no collection walks it again
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle made after the freeze: garbage only a collection frees
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None


@pytest.mark.usefixtures("restored_gc")
def test_what_a_batch_leaves_alive_is_frozen_and_a_sweep_frees_frozen_cycles() -> None:
    settle_heap(sweep_s=3600)
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # alive when the batch ends
    gone = weakref.ref(a)
    frozen = gc.get_freeze_count()
    after_batch()
    assert gc.get_freeze_count() >= frozen + 2 and all(o is not a for o in gc.get_objects())
    del a, b  # garbage now, in a cycle no collection walks: only a sweep frees it
    gc.collect()
    assert gone() is not None
    assert heap.sweep() >= 2
    assert gone() is None
    assert gc.get_freeze_count() > 0  # what is left is frozen again


@pytest.mark.usefixtures("restored_gc")
def test_after_batch_sweeps_when_its_time_has_come_and_does_nothing_unsettled(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = gc.get_freeze_count()
    after_batch()  # settle_heap has not run: the interpreter's collections stay as they are
    assert gc.get_freeze_count() == frozen
    settle_heap(sweep_s=600)
    swept: list[bool] = []
    monkeypatch.setattr(heap, "sweep", lambda: swept.append(True) or 0)
    after_batch()
    assert not swept
    monkeypatch.setattr(heap.time, "monotonic", lambda: heap._Managed.swept + 601)
    after_batch()
    assert swept == [True]
