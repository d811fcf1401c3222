"""Train the Zstandard dictionaries state documents and recent-change entries are compressed
with (segengine.compress).

    python -m bench.state_dictionary

The samples are the documents and entries the CDNOW demo data (segengine.datasets.demo_events: CDNOW's
purchases with browses, feedback and profiles around them) leaves in the store when the
shipped rule packs fold it batch by batch, taken at intervals along the way, so that new
customers, long-standing ones and lapsed ones are all in it. The benchmark's workload is
not: the dictionary is not fitted to what it is measured on.

A shipped dictionary is never changed (documents name it by id and need it to be read):
this writes the dictionaries of ``segengine.compress.KINDS`` whose files are missing, and
leaves those that exist (a better one is a new id there).
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import orjson
import zstandard
from rich.console import Console
from rich.progress import Progress

from segengine import codec, writes
from segengine.clock import EventClock
from segengine.compress import KINDS, dictionary_path
from segengine.datasets import demo_events, read_cdnow
from segengine.metrics import Metrics
from segengine.pipeline import BatchProcessor
from segengine.records import OutRecord
from segengine.rules import load_rules
from segengine.settings import Settings
from segengine.state import CustomerState
from segengine.store_memory import MemoryStore

ROOT = Path(__file__).resolve().parent.parent
BATCH = 2_000
SAMPLE_EVERY = 10  # batches
SAMPLES_PER_TAKE = 150
DICT_SIZE = 8_192
SEED = 11
ENTRY_SAMPLES = 20_000


class _Record:
    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, topic: str, offset: int, key: bytes, value: bytes, timestamp: int) -> None:
        self.topic, self.partition, self.offset, self.key, self.value, self.timestamp = (
            topic, 0, offset, key, value, timestamp,
        )  # fmt: skip


class _Discard:
    async def publish(self, records: list[OutRecord]) -> None:
        return None


def _records() -> Iterator[_Record]:
    offsets: dict[str, int] = {}
    for topic, event in demo_events(read_cdnow()):
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        yield _Record(topic, offset, str(event["customer_id"]).encode(), orjson.dumps(event), int(event["ts"]))


async def samples(console: Console) -> tuple[list[bytes], list[bytes]]:
    """Raw (uncompressed) state documents, taken along the fold of the demo data, and the
    recent-change entries the store holds at its end."""
    rng = random.Random(SEED)
    store = MemoryStore()
    settings = Settings(dedupe_horizon_days=7, future_skew_s=300, max_event_bytes=1 << 20)
    processor = BatchProcessor(
        settings, load_rules(ROOT / "rules"), store, _Discard(), EventClock(), Metrics(process=False)
    )
    records = list(_records())
    taken: list[bytes] = []

    def take() -> None:
        written = [h.s for h in store.hashes.values() if h.s]
        for blob in rng.sample(written, min(SAMPLES_PER_TAKE, len(written))):
            taken.append(codec.pack_state(CustomerState.loads(blob)))

    # stored uncompressed while the samples are taken: there may be no dictionary yet
    raw = [patch.object(module, name, lambda blob, *_: blob)
           for module, name in ((codec, "compress"), (writes, "compress"), (writes, "compress_entry"))]  # fmt: skip
    with Progress(console=console) as progress, raw[0], raw[1], raw[2]:
        task = progress.add_task("folding the CDNOW demo data", total=len(records))
        for n, start in enumerate(range(0, len(records), BATCH)):
            stats = await processor.process(records[start : start + BATCH])
            processor.committed.update(stats.next_offsets)
            await store.outbox_published(stats.outboxes)
            if n % SAMPLE_EVERY == SAMPLE_EVERY - 1:
                take()
            progress.advance(task, len(records[start : start + BATCH]))
    take()
    entries = [entry for held in store.changes.values() for entry in held]
    return taken, rng.sample(entries, min(ENTRY_SAMPLES, len(entries)))


def main() -> None:
    console = Console()
    missing = {dict_id: dictionary_path(dict_id) for dict_id in KINDS if not dictionary_path(dict_id).exists()}
    if not missing:
        sys.exit("every dictionary exists: a shipped dictionary is never changed; add a new id to compress.KINDS")
    documents, entries = asyncio.run(samples(console))
    for dict_id, path in missing.items():
        taken = entries if KINDS[dict_id] == "recent" else documents
        trained = zstandard.train_dictionary(DICT_SIZE, taken, dict_id=dict_id, level=3, threads=1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(trained.as_bytes())
        plain = sum(map(len, taken))
        compressor = zstandard.ZstdCompressor(level=3, dict_data=trained, write_checksum=False)
        packed = sum(len(compressor.compress(sample)) for sample in taken)
        console.print(
            f"{path.name}: {len(trained.as_bytes()):,} bytes from {len(taken):,} samples; "
            f"on them {plain / len(taken):.0f} -> {packed / len(taken):.0f} bytes each"
        )


if __name__ == "__main__":
    main()
