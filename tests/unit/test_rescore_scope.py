"""A population re-score decides again only the dimensions that read the population
(segengine.pipeline.RESCORED): the customer's due moments are decided first, so what else time
moves is decided up to the re-score's time, and only the sample changed. Held here to what
deciding every time-dependent dimension again gives, on the benchmark's workload with every
shipped pack: the same records and the same stored state."""

from __future__ import annotations

import hashlib

from bench.fold import DigestSink, consumed, fold_batches, population_sample
from bench.run import workload
from segengine.clock import EventClock
from segengine.metrics import Metrics
from segengine.paths import SHIPPED_RULES
from segengine.pipeline import BatchProcessor
from segengine.rules import load_rules
from segengine.settings import Settings
from segengine.store_memory import MemoryStore

SKEW_MS = 300_000


async def rescored(full: bool) -> tuple[int, str, str]:
    """The workload folded under one sample, then every customer re-scored under another:
    (records the re-score published, their digest, the stored state's digest)."""
    rules = load_rules(SHIPPED_RULES)
    rules.population.replace(population_sample(rules, 5, 2.0), 0)
    store, clock = MemoryStore(), EventClock()
    settings = Settings(dedupe_horizon_days=7, future_skew_s=SKEW_MS // 1000)
    processor = BatchProcessor(settings, rules, store, DigestSink(), clock, Metrics())  # type: ignore[arg-type]
    records = workload(6_000, 600)
    await fold_batches(processor, store, clock, consumed(records))

    rules.population.replace(population_sample(rules, 7, 0.5), clock.now())  # the cut points moved
    sink = processor.sink = DigestSink()
    ids = sorted({key.decode() for _, key, _ in records})
    in_force = clock.now() + SKEW_MS
    for i in range(0, len(ids), 50):
        turn = ids[i : i + 50]
        if full:  # every dimension time can change, as a timer at that time decides them
            now = clock.now()
            prepared = await processor._without_events(
                {cid: now for cid in turn},
                rules,
                {"kind": "timer"},
                f"population:{rules.population.taken_at}:{now}",
                decided_after=in_force,
            )
        else:
            prepared = await processor.reevaluate(turn, rules, rescore=True, decided_after=in_force)
        with processor.signature.held():
            await processor.publish(prepared)
        await processor.outbox_published(prepared.stats.outboxes)
    stored = hashlib.sha256(repr(store.snapshot()).encode()).hexdigest()
    return sink.count, sink.digest.hexdigest(), stored


async def test_a_rescore_of_the_ranked_dimensions_publishes_and_stores_what_a_full_one_does() -> None:
    scoped = await rescored(full=False)
    assert scoped[0] > 0  # the new sample moved customers: there is something to compare
    assert scoped == await rescored(full=True)
