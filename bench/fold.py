"""The batch pipeline in one process, without a broker or Redis: what `bench.instructions`
counts and what the compiled core is held to (tests/unit/test_native_build.py).

``python -m bench.fold EVENTS START`` folds the records of EVENTS (a JSON list of [topic,
key, value], as ``write_events`` writes them) with every shipped pack and a population sample,
through ``BatchProcessor`` on a ``MemoryStore``, 500 records a batch, each told published as
the worker tells it (so the worker's state cache serves as it does there), on event time as
the benchmark's engine runs (``SEGENGINE_CLOCK=event``: each event decided at its own time,
the timers that fell due by the records read fired after every batch); the population sample
is taken at START (epoch ms); the garbage collector is set as `segengine run` sets it. It prints one
JSON line: the module the fold ran from, which core (compiled or Python), the records
published and timers fired, and SHA-256 digests of everything published (topics, keys and
values, in order) and of everything stored, so that two runs of different code can be held
to the same output.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from segengine.state import DAY_MS

BATCH = 500
# The population sample's values spread over about the workload's range, per ranked feature of
# the shipped packs, and twice as many as the rules' least sample: every population-ranked
# score is decided as the benchmark's engine decides it.
SAMPLE_SPREAD = {"orders_total": 12.0, "spend_total": 600.0, "days_since_last_purchase": 120.0}


class Record:
    """A consumed record as the pipeline reads it (one partition per topic)."""

    def __init__(self, topic: str, offset: int, key: bytes, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.key, self.value, self.timestamp = topic, 0, offset, key, value, 0


class DigestSink:
    """Publishes into a digest: the records' count and a SHA-256 of them, in order."""

    def __init__(self) -> None:
        self.digest, self.count = hashlib.sha256(), 0

    async def publish(self, records: Sequence[tuple[str, bytes | None, bytes | None]]) -> None:
        for topic, key, value in records:
            self.count += 1
            for part in (topic.encode(), key or b"", b"-" if value is None else b"+" + value):
                self.digest.update(len(part).to_bytes(4, "big") + part)


def next_midnight_ms() -> int:
    """The next UTC midnight, epoch ms: a START after every event of the workload, the same all day."""
    return (time.time_ns() // 1_000_000 // DAY_MS + 1) * DAY_MS


def write_events(path: Path, records: Sequence[tuple[str, bytes, bytes]]) -> None:
    """The records (bench.run.workload's) as the file ``fold`` reads."""
    path.write_bytes(orjson.dumps([[t, k.decode(), v.decode()] for t, k, v in records]))


def population_sample(rules: Any, seed: int, scale: float = 1.0) -> dict[str, list[float]]:
    """A population sample of every ranked feature: twice the rules' least sample, spread over
    ``scale`` times about the workload's range (SAMPLE_SPREAD)."""
    rng = random.Random(seed)
    size = rules.population.min_sample * 2
    return {
        n: sorted(rng.uniform(0, SAMPLE_SPREAD[n] * scale) for _ in range(size))
        for n in sorted(rules.population_features)
    }


def consumed(records: Sequence[tuple[str, bytes, bytes]]) -> list[Record]:
    """(topic, key, value) as the pipeline reads them, offsets counted per topic."""
    offsets: dict[str, int] = {}
    rows = []
    for topic, key, value in records:
        offsets[topic] = offsets.get(topic, -1) + 1
        rows.append(Record(topic, offsets[topic], key, value))
    return rows


async def fold_batches(
    processor: Any, store: Any, clock: Any, rows: list[Record], after: Callable[[], None] = lambda: None
) -> int:
    """The rows through ``processor``, BATCH at a time, each told published as the worker tells
    it, the timers that fell due by the records read fired after every batch (``after`` after
    each step); the number of timers fired."""
    fired = 0
    for i in range(0, len(rows), BATCH):
        stats = await processor.process(rows[i : i + BATCH])
        await processor.outbox_published(stats.outboxes)
        after()
        due = await store.due(0, clock.now(), -1)
        fired += len(due)
        prepared = await processor.fire_timers(due, 0)
        with processor.signature.held():
            await processor.publish(prepared)
        await processor.outbox_published(prepared.stats.outboxes)
        after()
    return fired


async def fold(path: Path, start: int) -> dict[str, object]:
    import segengine
    import segengine.evaluate
    from segengine.clock import EventClock
    from segengine.heap import after_batch, settle_heap
    from segengine.metrics import Metrics
    from segengine.paths import SHIPPED_RULES
    from segengine.pipeline import BatchProcessor
    from segengine.rules import load_rules
    from segengine.settings import Settings
    from segengine.store_memory import MemoryStore

    rules = load_rules(SHIPPED_RULES)
    rules.population.replace(population_sample(rules, 5), start)
    store, sink, clock = MemoryStore(), DigestSink(), EventClock()
    settings = Settings(dedupe_horizon_days=7, future_skew_s=300)
    processor = BatchProcessor(settings, rules, store, sink, clock, Metrics())  # type: ignore[arg-type]
    rows = consumed([(t, k.encode(), v.encode()) for t, k, v in orjson.loads(path.read_bytes())])
    settle_heap()  # the garbage collector as `segengine run` sets it once the worker is set up
    fired = await fold_batches(processor, store, clock, rows, after_batch)
    return {
        "module": segengine.evaluate.__file__,
        "native": segengine.NATIVE.reason,
        "records": sink.count,
        "fired": fired,
        "published": sink.digest.hexdigest(),
        "stored": hashlib.sha256(repr(store.snapshot()).encode()).hexdigest(),
    }


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: python -m bench.fold EVENTS.json START_MS")
    print(json.dumps(asyncio.run(fold(Path(argv[0]), int(argv[1])))))


if __name__ == "__main__":
    main(sys.argv[1:])
