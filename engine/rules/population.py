"""Population-relative scores: ``quantile_score(feature, n)`` and ``pct_rank(feature)``.

Workers keep, per feature that such a function reads, a sorted sample of the feature's
values over the live population (``Population``). The sample is recomputed periodically
from a sample of customers (segengine.worker.population) and shared through Redis, thinned
to at most ``KEPT`` values per feature. With a sample of k customers, a rank is off by at
most about 1/sqrt(k) (for k = 10,000: about ±1 percentile) plus the drift since the last
refresh.

A rank against a handful of customers says nothing (the first buyer of a fresh stack is
both the best and the worst), so a feature ranks only once its sample holds at least
``min_sample`` values, one per customer that has one (the rules' ``population:
{min_sample: N}``, default ``DEFAULT_MIN_SAMPLE``). Until then, and before the first
sample exists, both functions are null.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import Any

from ..timers import RankChanges, rank_changes

DEFAULT_MIN_SAMPLE = 1000
# Values a shared sample keeps per feature (segengine.worker.population.SAMPLE_KEEP): a
# larger minimum could never be seen in a thinned sample, so the rules refuse one.
KEPT = 2000
# Ranks remembered per feature between samples (a customer's value is ranked again and again:
# by its event's decision, the moments its timer is tried at, its timers); forgotten when full.
RANKS_KEPT = 4096


class Population:
    """Sorted samples per feature; replaced as a whole when a new sample arrives. Only the
    features whose sample holds at least ``min_sample`` values are kept in ``samples``
    (what the scores and the timers rank against); ``sizes`` has every one."""

    def __init__(self, min_sample: int = DEFAULT_MIN_SAMPLE) -> None:
        self.samples: dict[str, list[float]] = {}
        self.sizes: dict[str, int] = {}  # feature -> values in the last sample given, usable or not
        self.taken_at: int | None = None
        self.min_sample = min_sample
        self._changes: dict[tuple[str, int | None], RankChanges] = {}  # worked out once per sample
        self._ranks: dict[str, dict[Any, float]] = {}  # feature -> value -> its pct_rank, in this sample

    def replace(self, samples: dict[str, list[float]], taken_at: int | None) -> None:
        self.sizes = {name: len(values) for name, values in samples.items()}
        self.samples = {name: sorted(values) for name, values in samples.items() if len(values) >= self.min_sample}
        self.taken_at = taken_at
        self._changes = {}
        self._ranks = {}

    def rank_changes(self, feature: str, n: int | None) -> RankChanges | None:
        """Where a growing value's score against ``feature``'s sample changes
        (segengine.timers.rank_changes; ``n`` None: ``pct_rank``); None without a sample."""
        sample = self.samples.get(feature)
        if not sample:
            return None
        changes = self._changes.get((feature, n))
        if changes is None:
            changes = self._changes[(feature, n)] = rank_changes(sample, n)
        return changes

    @property
    def held_back(self) -> dict[str, int]:
        """Features whose sample is too small to rank against: feature -> its size."""
        return {name: size for name, size in self.sizes.items() if name not in self.samples}

    def pct_rank(self, feature: str, value: Any) -> float | None:
        """Share of the population with a smaller value, ties counted half: 0..1."""
        sample = self.samples.get(feature)
        if not sample or value is None:
            return None
        ranks = self._ranks.get(feature)
        if ranks is None:
            ranks = self._ranks[feature] = {}
        rank = ranks.get(value)  # values equal as keys compare equal to every sample value: one rank
        if rank is None:
            below = bisect_left(sample, value)
            ties = bisect_right(sample, value) - below
            rank = (below + ties / 2) / len(sample)
            if len(ranks) >= RANKS_KEPT:
                ranks.clear()
            ranks[value] = rank
        return rank

    def quantile_score(self, feature: str, value: Any, n: int) -> int | None:
        """1..n: which n-quantile of the population the value falls in (RFM quintiles: n = 5)."""
        rank = self.pct_rank(feature, value)
        if rank is None or n < 1:
            return None
        return min(n, 1 + int(rank * n))


def thin(sorted_values: list[float], keep: int = KEPT) -> list[float]:
    """At most ``keep`` evenly spaced values of a sorted list (ranks stay within 1/keep), as a
    worker thins the sample it shares."""
    if len(sorted_values) <= keep:
        return sorted_values
    step = len(sorted_values) / keep
    return [sorted_values[int(i * step)] for i in range(keep)]


def rankable(value: Any) -> bool:
    """Whether a feature's value enters a population sample: a finite number."""
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)
