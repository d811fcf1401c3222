"""Population-relative scores: ``quantile_score(feature, n)`` and ``pct_rank(feature)``.

Workers keep, per feature that such a function reads, a sorted sample of the feature's
values over the live population (``Population``). The sample is recomputed periodically
from a random sample of customers (see ``Worker._refresh_quantiles``) and shared through
Redis. With a sample of k customers, a rank is off by at most about 1/sqrt(k) (for
k = 10,000: about ±1 percentile) plus the drift since the last refresh. Before the first
sample exists, both functions are null.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any


class Population:
    """Sorted samples per feature; replaced as a whole when a new sample arrives."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.taken_at: int | None = None

    def replace(self, samples: dict[str, list[float]], taken_at: int | None) -> None:
        self.samples = {name: sorted(values) for name, values in samples.items()}
        self.taken_at = taken_at

    def pct_rank(self, feature: str, value: Any) -> float | None:
        """Share of the population with a smaller value, ties counted half: 0..1."""
        sample = self.samples.get(feature)
        if not sample or value is None:
            return None
        below = bisect_left(sample, value)
        ties = bisect_right(sample, value) - below
        return (below + ties / 2) / len(sample)

    def quantile_score(self, feature: str, value: Any, n: int) -> int | None:
        """1..n: which n-quantile of the population the value falls in (RFM quintiles: n = 5)."""
        rank = self.pct_rank(feature, value)
        if rank is None or n < 1:
            return None
        return min(n, 1 + int(rank * n))
