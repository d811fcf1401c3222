"""The worker's garbage-collector tuning (``segengine run``): what exists at start is frozen out
of collections, young collections are rarer, and cycles made afterwards are still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from segengine.commands.stack import GC_THRESHOLDS, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


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
