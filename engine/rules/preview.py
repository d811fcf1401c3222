"""``rules simulate`` against a store: who would move if new rules replaced the live ones.

Both rule sets decide every stored customer at the same instant, from the same state, and
rank against the same population samples: the sample the workers share through the store,
taken in as a worker takes it in (features under the rules' ``min_sample`` stay unranked);
and for a feature that sample lacks, or that the new rules define differently, a sample
taken now from the first customers found, as a worker takes one. So rules that did not
change move nobody, and what moves is what the change moves. Nothing is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..state import CustomerState, Features
from .population import rankable, thin
from .ruleset import RuleSet
from .tools import Moves, compare

if TYPE_CHECKING:
    from ..store import Store

Key = tuple[str, str | None]  # a ranked feature and its definition (None: a built-in feature)


@dataclass(slots=True)
class Preview:
    """What ``rules simulate`` reports."""

    now: int
    rules_version: str
    baseline_version: str
    dimensions: tuple[str, ...]  # the new rules' dimensions, in their order
    removed: tuple[str, ...]  # the live rules' dimensions the new rules lack: memberships stay as they are
    new_aggregates: tuple[str, ...]  # aggregations new or changed in the new rules: no history yet
    moves: Moves = field(default_factory=dict)  # dimension -> (from, to) -> customers; only real moves
    customers: int = 0  # customers evaluated
    skipped: int = 0  # customers whose state could not be read or evaluated
    sample_taken_at: int | None = None  # the shared population sample's time (None: there is none)
    sampled_now: tuple[str, ...] = ()  # ranked features not in the shared sample (or redefined): sampled now
    held_back: dict[str, int] = field(default_factory=dict)  # feature -> sample size, under min_sample
    min_sample: int = 0

    @property
    def unchanged(self) -> list[str]:
        return [d for d in self.dimensions if not self.moves.get(d)]

    def report(self) -> dict[str, Any]:
        """The preview as JSON-ready data (``rules simulate --json``)."""
        return {
            "customers": self.customers,
            "skipped": self.skipped,
            "now": self.now,
            "rules_version": self.rules_version,
            "baseline_version": self.baseline_version,
            "moves": {
                d: [{"from": a, "to": b, "customers": n} for (a, b), n in ordered(self.moves[d])]
                for d in self.dimensions
                if self.moves.get(d)
            },
            "unchanged": self.unchanged,
            "removed_dimensions": list(self.removed),
            "aggregations_without_history": list(self.new_aggregates),
            "population": {
                "sample_taken_at": self.sample_taken_at,
                "sampled_now": list(self.sampled_now),
                "min_sample": self.min_sample,
                "held_back": self.held_back,
            },
        }


def ordered(counts: Counter[tuple[str | None, str | None]]) -> list[tuple[tuple[str | None, str | None], int]]:
    """Most customers first; ties by segment names."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0][0]), str(kv[0][1])))


async def preview(
    store: Store,
    rules: RuleSet,
    baseline: RuleSet,
    now: int,
    *,
    limit: int | None = None,
    sample_size: int = 10_000,
    progress: Callable[[int], None] | None = None,
) -> Preview:
    """Decide every customer of ``store`` (the first ``limit`` found) with ``baseline`` (the
    live rules) and ``rules`` at ``now``, and count who would move. ``sample_size``: the
    customers a population sample taken now reads (SEGENGINE_QUANTILES_SAMPLE)."""
    live_keys = {a.key for a in baseline.aggregates}
    result = Preview(
        now,
        rules.version,
        baseline.version,
        tuple(d.name for d in rules.dimensions),
        tuple(d.name for d in baseline.dimensions if d.name not in {n.name for n in rules.dimensions}),
        tuple(a.name for a in rules.aggregates if a.key not in live_keys),
        moves={d.name: Counter() for d in rules.dimensions},
        min_sample=rules.population.min_sample,
    )
    await take_in_samples(store, rules, baseline, now, sample_size, result)
    seen = 0
    async for ids in store.scan_customers():
        ids = ids[: None if limit is None else max(0, limit - seen)]
        for row in (await store.load(ids)).values():
            if row.blob is None:  # erased, awaiting its commit
                continue
            try:
                moved = compare(rules, baseline, CustomerState.loads(row.blob), now)
            except Exception:  # one unreadable customer does not stop the preview; it is counted
                result.skipped += 1
                continue
            result.customers += 1
            for name, old, new in moved:
                result.moves[name][(old, new)] += 1
        seen += len(ids)
        if progress is not None:
            progress(seen)
        if limit is not None and seen >= limit:
            break
    return result


async def take_in_samples(
    store: Store, rules: RuleSet, baseline: RuleSet, now: int, sample_size: int, result: Preview
) -> None:
    """Give both rule sets their population samples (see the module's docstring)."""
    shared = await store.quantile_samples()
    taken_at, samples = shared if shared is not None else (None, {})

    def definition(r: RuleSet, feature: str) -> str | None:
        return r.derived_sources.get(feature)

    def shared_fits(r: RuleSet, feature: str) -> bool:
        """The shared sample holds this rule set's feature: a built-in one, or one the live rules
        rank with the same definition (the workers sample what the live rules rank)."""
        if feature not in samples:
            return False
        source = definition(r, feature)
        return source is None or (feature in baseline.population_features and definition(baseline, feature) == source)

    wanted: dict[Key, RuleSet] = {}
    for r in (baseline, rules):
        for feature in r.population_features:
            if not shared_fits(r, feature):
                wanted.setdefault((feature, definition(r, feature)), r)
    fresh = await sample_now(store, wanted, now, sample_size) if wanted else {}
    for r in (baseline, rules):
        given = {f: v for f, v in samples.items() if f not in r.population_features or shared_fits(r, f)}
        given |= {f: fresh[(f, definition(r, f))] for f in r.population_features if (f, definition(r, f)) in fresh}
        r.population.replace(given, taken_at if taken_at is not None else now)
    result.sample_taken_at = taken_at
    result.sampled_now = tuple(sorted({f for f, _ in wanted}))
    result.held_back = {f: n for f, n in sorted(rules.population.held_back.items()) if f in rules.population_features}


async def sample_now(store: Store, wanted: dict[Key, RuleSet], now: int, size: int) -> dict[Key, list[float]]:
    """Values of the wanted features over the first ``size`` customers found, sorted and thinned,
    as a worker samples the population (segengine.worker.population); each feature computed
    with the rule set that wants it."""
    values: dict[Key, list[float]] = {key: [] for key in wanted}
    seen = 0
    async for ids in store.scan_customers(count=500):
        for row in (await store.load(ids)).values():
            if row.blob is None:
                continue
            try:
                state = CustomerState.loads(row.blob)
                features = {id(r): Features(state, now, r.derived) for r in wanted.values()}
                read = {key: features[id(r)][key[0]] for key, r in wanted.items()}
            except Exception:  # left out of the sample, as a worker leaves it out
                continue
            for key, value in read.items():
                if rankable(value):
                    values[key].append(value)
        seen += len(ids)
        if seen >= size:
            break
    return {key: thin(sorted(found)) for key, found in values.items()}
