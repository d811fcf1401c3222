"""The compiled core gives what the Python one gives: the same build `segengine native build`
makes, in a folder of the test's own, and the same fold run twice in processes of their own
(SEGENGINE_NATIVE=<that folder>, then off): every shipped pack with a population sample,
event batches of the benchmark's workload, and time moved on so that timers fire. The
records published (topics, keys and values, in order) and everything stored must be equal.

Needs mypy and a C compiler with the Python headers (the build takes about a minute); skipped
without them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import orjson
import pytest

from bench.run import workload
from segengine import native

FOLD = r"""
import asyncio, hashlib, json, random, sys
import orjson
import segengine, segengine.evaluate
from segengine.metrics import Metrics
from segengine.paths import SHIPPED_RULES
from segengine.pipeline import BatchProcessor
from segengine.rules import load_rules
from segengine.settings import Settings
from segengine.store_memory import MemoryStore

DAY = 86_400_000

class Record:
    def __init__(self, topic, offset, key, value):
        self.topic, self.partition, self.offset, self.key, self.value, self.timestamp = topic, 0, offset, key, value, 0

class Sink:
    def __init__(self):
        self.digest, self.count = hashlib.sha256(), 0
    async def publish(self, records):
        for r in records:
            self.count += 1
            for part in (r.topic.encode(), r.key or b"", b"-" if r.value is None else b"+" + r.value):
                self.digest.update(len(part).to_bytes(4, "big") + part)

class Clock:
    def __init__(self, start):
        self.at = start
    def now_for(self, ts):
        self.at += 1
        return self.at
    def now(self):
        return self.at
    def observe(self, *args):
        pass

async def main(path, start):
    rules = load_rules(SHIPPED_RULES)
    rng = random.Random(5)
    rules.population.replace({n: sorted(rng.lognormvariate(4, 1) for _ in range(500)) for n in rules.population_features}, start)
    store, sink, clock = MemoryStore(), Sink(), Clock(start)
    settings = Settings(dedupe_horizon_days=7, future_skew_s=300)
    processor = BatchProcessor(settings, rules, store, sink, clock, Metrics())
    offsets = {}
    rows = []
    for topic, key, value in orjson.loads(open(path, "rb").read()):
        offsets[topic] = offsets.get(topic, -1) + 1
        rows.append(Record(topic, offsets[topic], key.encode(), value.encode()))
    fired = 0
    for n, i in enumerate(range(0, len(rows), 500)):
        stats = await processor.process(rows[i : i + 500])
        await store.outbox_published(stats.outboxes)
        if n % 5 == 4:
            clock.at += 9 * DAY
            due = await store.due(0, clock.at, -1)
            fired += len(due)
            prepared = await processor.fire_timers(due, 0)
            with processor.signature.held():
                await processor.publish(prepared)
            await store.outbox_published(prepared.stats.outboxes)
    print(json.dumps({"module": segengine.evaluate.__file__, "native": segengine.NATIVE.reason, "records": sink.count,
                      "fired": fired, "published": sink.digest.hexdigest(),
                      "stored": hashlib.sha256(repr(store.snapshot()).encode()).hexdigest()}))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


@pytest.mark.skipif(_compiler() is None, reason="no C compiler: the compiled core cannot be built here")
def test_the_compiled_core_publishes_and_stores_what_the_python_one_does(tmp_path: Path) -> None:
    pytest.importorskip("mypyc", reason="mypy (segengine[native]) is not installed")
    folder = native.build(tmp_path / "native")
    assert native.unusable(folder) is None
    events = tmp_path / "events.json"
    events.write_bytes(orjson.dumps([[t, k.decode(), v.decode()] for t, k, v in workload(20_000, 2_000)]))
    day = 86_400_000
    start = (time.time_ns() // 1_000_000 // day + 1) * day  # tomorrow, after every event of the workload
    runs = {}
    for setting in (str(folder), "off"):
        env = {**os.environ, "SEGENGINE_NATIVE": setting}
        done = subprocess.run(
            [sys.executable, "-c", FOLD, str(events), str(start)], env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[setting] = json.loads(done.stdout.strip().splitlines()[-1])
    compiled, python = runs[str(folder)], runs["off"]
    assert compiled["module"].startswith(str(folder.resolve())) and compiled["module"].endswith(
        native.extension_suffix()
    )
    assert python["module"].endswith("evaluate.py")
    assert python["records"] > 20_000 and python["fired"] > 0  # it did decide: changes, and timers fired
    assert {k: v for k, v in compiled.items() if k not in ("module", "native")} == {
        k: v for k, v in python.items() if k not in ("module", "native")
    }
