"""The compiled core gives what the Python one gives: the same build `segengine native build`
makes, in a folder of the test's own, and the same fold (bench.fold) run twice in processes
of their own (SEGENGINE_NATIVE=<that folder>, then off): every shipped pack with a population
sample, event batches of the benchmark's workload, and time moved on so that timers fire. The
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
from pathlib import Path

import pytest

from bench.fold import next_midnight_ms, write_events
from bench.run import workload
from segengine import native

ROOT = Path(__file__).resolve().parents[2]  # where `python -m bench.fold` finds the bench package


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


@pytest.mark.skipif(_compiler() is None, reason="no C compiler: the compiled core cannot be built here")
def test_the_compiled_core_publishes_and_stores_what_the_python_one_does(tmp_path: Path) -> None:
    pytest.importorskip("mypyc", reason="mypy (segengine[native]) is not installed")
    folder = native.build(tmp_path / "native")
    assert native.unusable(folder) is None
    events = tmp_path / "events.json"
    write_events(events, workload(20_000, 2_000))
    start = next_midnight_ms()  # after every event of the workload
    runs = {}
    for setting in (str(folder), "off"):
        env = {**os.environ, "SEGENGINE_NATIVE": setting}
        done = subprocess.run(
            [sys.executable, "-m", "bench.fold", str(events), str(start)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
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
