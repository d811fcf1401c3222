"""The command line names a bad setting as the operator wrote it, in one line, and exits 2
before connecting to anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_line_exits_2_with_one_line_per_problem() -> None:
    env = {**os.environ, "SEGENGINE_BATCH_MAX_RECORDS": "abc", "SEGENGINE_REDIS_ULR": "redis://127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "engine.cli", "segments"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "warning: unknown setting SEGENGINE_REDIS_ULR: did you mean SEGENGINE_REDIS_URL?",
        "invalid setting: SEGENGINE_BATCH_MAX_RECORDS='abc': Input should be a valid integer, unable to parse string as an integer",
    ]


def test_run_never_starts_an_embedded_stack_unless_asked() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEGENGINE_")}
    for extra, missing in (({}, "SEGENGINE_KAFKA_BOOTSTRAP and SEGENGINE_REDIS_URL"), ({"SEGENGINE_REDIS_URL": "redis://127.0.0.1:1"}, "SEGENGINE_KAFKA_BOOTSTRAP")):
        done = subprocess.run([sys.executable, "-m", "engine.cli", "run"], cwd=ROOT, env={**clean, **extra}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [f"set {missing} (or run with --embedded / SEGENGINE_EMBEDDED=true for a development stack)"]
