"""What the worker's background loops share: built once by the worker, handed to each loop."""

from __future__ import annotations

from dataclasses import dataclass

from ..metrics import Metrics
from ..pipeline import BatchProcessor
from ..settings import Settings
from ..store import Store
from .decisions import Decisions
from .ownership import Ownership


@dataclass(frozen=True, slots=True)
class Parts:
    settings: Settings
    processor: BatchProcessor  # the rules in force (``processor.rules``) and the clock
    store: Store
    decisions: Decisions  # the one door to customer state
    ownership: Ownership  # the partitions this worker owns, and how far it may decide them
    metrics: Metrics
