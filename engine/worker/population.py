"""The population samples behind quantile_score / pct_rank: kept fresh (the one in the store
when it is recent, else a new sample shared through the store), and a re-score of every
customer this worker owns when a cut point moved by more than ``rescore_drift``."""

from __future__ import annotations

import asyncio
import logging
import math

from ..rules import RuleSet
from ..state import CustomerState, Features
from ..store import QuantileSamples
from .parts import Parts
from .reevaluate import Reevaluation
from .tasks import pause

log = logging.getLogger(__name__)

SAMPLE_KEEP = 2000  # values kept per feature in a shared sample
YIELD_EVERY = 100  # customers read into a sample between two turns of the event loop


def thin(sorted_values: list[float], keep: int) -> list[float]:
    """At most ``keep`` evenly spaced values of a sorted list (ranks stay within 1/keep)."""
    if len(sorted_values) <= keep:
        return sorted_values
    step = len(sorted_values) / keep
    return [sorted_values[int(i * step)] for i in range(keep)]


def cuts(rules: RuleSet) -> QuantileSamples:
    """The population's cut points (twentieths) per ranked feature."""
    return {f: [v[int(i * (len(v) - 1) / 20)] for i in range(21)] for f, v in rules.population.samples.items() if v}


def moved(previous: QuantileSamples | None, current: QuantileSamples, drift: float) -> bool:
    """Whether a cut point moved by more than ``drift`` (a share) since the last re-score."""
    if previous is None or set(previous) != set(current):
        return True  # never re-scored: customers decided before any sample are unscored
    return any(abs(a - b) > drift * max(abs(a), abs(b), 1e-9) for f in current for a, b in zip(previous[f], current[f]))


class PopulationSample:
    def __init__(self, parts: Parts, reevaluation: Reevaluation) -> None:
        self.settings, self.processor, self.store = parts.settings, parts.processor, parts.store
        self.ownership, self.metrics = parts.ownership, parts.metrics
        self.reevaluation = reevaluation
        self._rescoring: asyncio.Task[int] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        period_s = self.settings.quantiles_refresh_s
        while not stop.is_set():
            rules = self.processor.rules
            if rules.population_features and self.ownership.time_known:
                try:
                    await self.refresh(rules, int(period_s * 1000))
                except Exception as exc:  # a stale sample is better than a stopped worker
                    log.warning("population sample refresh failed: %s", type(exc).__name__)
                    log.debug("population sample refresh failed", exc_info=True)
            waiting = bool(rules.population_features) and rules.population.taken_at is None
            await pause(stop, min(period_s, 2.0) if waiting else period_s)

    async def refresh(self, rules: RuleSet, period_ms: int) -> None:
        now = self.processor.clock.now()
        shared = await self.store.quantile_samples()
        if shared is not None and 0 <= now - shared[0] < period_ms:
            if shared[0] != rules.population.taken_at:
                rules.population.replace(shared[1], shared[0])
                await self._maybe_rescore(rules)
            return
        samples = await self.sample(rules, now)
        if samples:
            await self.store.save_quantile_samples(now, samples)
            rules.population.replace(samples, now)
            log.info("population sample renewed: %s", {k: len(v) for k, v in samples.items()})
            await self._maybe_rescore(rules)

    async def renew(self) -> None:
        """Take a new population sample now and share it (the demo's last step; tools)."""
        rules = self.processor.rules
        if rules.population_features and self.ownership.time_known:
            now = self.processor.clock.now()
            samples = await self.sample(rules, now)
            if samples:
                await self.store.save_quantile_samples(now, samples)
                rules.population.replace(samples, now)

    async def _maybe_rescore(self, rules: RuleSet) -> None:
        """A background re-score of this worker's customers when the sample moved enough since
        their last one, one at a time. The cut points each input partition's customers were
        re-scored with are kept in the store: a worker that takes over a partition, or
        restarts, re-scores only if the sample moved since; a worker that installs a sample
        another one took re-scores its own partitions' customers.

        Called once the sample is in force: a customer that entered its segment of every
        dimension reading the population since then was placed with it, and is left out. Every
        decision before had a time no later than the clock's now (in event time, the watermark
        its event moved) plus the future skew an event may carry (a decision is never before the
        customer's latest event): entries later than that came after. On a first sample taken
        while a backlog is read, that is every customer first seen since."""
        if self._rescoring is not None and not self._rescoring.done():
            return
        in_force = self.processor.clock.now() + int(self.settings.future_skew_s * 1000)
        current = cuts(rules)
        owned = self.ownership.partitions()
        before = await self.store.rescored_cuts(owned)
        if any(moved(before.get(partition), current, self.settings.rescore_drift) for partition in owned):
            await self.store.save_rescored_cuts(owned, current)
            self._rescoring = self.reevaluation.start(rules, rescore=True, decided_after=in_force)

    async def sample(self, rules: RuleSet, now: int) -> QuantileSamples:
        values: dict[str, list[float]] = {name: [] for name in rules.population_features}
        seen = 0
        async for ids in self.store.scan_customers(count=500):
            for n, loaded in enumerate((await self.store.load(ids)).values()):
                if n % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)  # event batches go on between slices: a sample takes no more CPU at once
                if loaded.blob is None:
                    continue
                try:
                    features = Features(CustomerState.loads(loaded.blob), now, rules.derived)
                    read = {name: features[name] for name in values}
                except Exception as exc:  # one customer that cannot be read is left out of the sample
                    self.metrics.quarantined.labels("sample").inc()
                    log.warning("customer left out of the population sample: %s", type(exc).__name__)
                    continue
                for name, value in read.items():
                    if value is not None and isinstance(value, (int, float)) and math.isfinite(value):
                        values[name].append(value)
            seen += len(ids)
            if seen >= self.settings.quantiles_sample:
                break
        return {name: thin(sorted(vals), SAMPLE_KEEP) for name, vals in values.items() if vals}
