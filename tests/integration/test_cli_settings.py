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
    done = subprocess.run(
        [sys.executable, "-m", "segengine", "segments"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "warning: unknown setting SEGENGINE_REDIS_ULR: did you mean SEGENGINE_REDIS_URL?",
        "invalid setting: SEGENGINE_BATCH_MAX_RECORDS='abc': Input should be a valid integer, unable to parse string as an integer",
    ]


def test_run_never_starts_an_embedded_stack_unless_asked() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEGENGINE_")}
    for extra, missing in (
        ({}, "SEGENGINE_KAFKA_BOOTSTRAP and SEGENGINE_REDIS_URL"),
        ({"SEGENGINE_REDIS_URL": "redis://127.0.0.1:1"}, "SEGENGINE_KAFKA_BOOTSTRAP"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "segengine", "run"],
            cwd=ROOT,
            env={**clean, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"set {missing} (or run with --embedded / SEGENGINE_EMBEDDED=true for a development stack)"
        ]


def closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_dependency_out_of_reach_is_one_line_and_exit_1() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEGENGINE_")}
    port = closed_port()
    cases = (
        (["segments"], {"SEGENGINE_REDIS_URL": f"redis://127.0.0.1:{port}/0"}, "error: cannot reach Redis: "),
        (
            ["run"],
            {"SEGENGINE_REDIS_URL": f"redis://127.0.0.1:{port}/0", "SEGENGINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"},
            "error: cannot reach ",
        ),
    )
    for args, extra, start in cases:
        done = subprocess.run(
            [sys.executable, "-m", "segengine", *args],
            cwd=ROOT,
            env={**clean, **extra},
            capture_output=True,
            text=True,
            timeout=180,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1, done.stderr
        assert len(lines) <= 3 and lines[-1].startswith(start) and str(port) in lines[-1], done.stderr


def test_invalid_rules_are_the_rules_check_lines_before_anything_starts(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEGENGINE_")}
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ndimensions:\n  d:\n    segments:\n      - name: a\n        when: nosuch_feature > 1\n    default: b\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    port = closed_port()  # nothing may be connected to: the rules are refused first
    env = {
        **clean,
        "SEGENGINE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "SEGENGINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
    }
    for args, expected in (
        (["run", "--rules", str(bad)], f"{bad}:6:"),
        (["rules", "check", str(empty)], f"{empty}:1:1: no *.yaml rule packs"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "segengine", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith(expected), done.stderr
