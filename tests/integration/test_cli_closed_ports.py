"""Every command that connects, run as a user runs it against a broker and a Redis that are
not there (loopback ports nobody listens on): each ends within a bounded time with exit code
1 and at most three lines on stderr, the last saying what could not be reached, and never a
traceback. Options given on the command line win over the environment; under JSON logs every
line on stderr is a JSON object."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import orjson
import typer

from segengine.cli import app
from segengine.paths import SHIPPED_RULES

ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 90  # far above the second or so each takes: a command that hangs is a failure, not a slow run
PARALLEL = 4  # commands at once: each starts a Python interpreter


def closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


EVENT = orjson.dumps(
    {
        "event_id": "e-1",
        "customer_id": "c-1",
        "type": "purchase",
        "ts": 1_700_000_000_000,
        "order_id": "o-1",
        "amount": 5,
    }
).decode()


async def segengine(
    gate: asyncio.Semaphore, args: list[str], env: dict[str, str], stdin: bytes = b""
) -> tuple[int, str, str]:
    async with gate:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "segengine", *args, cwd=ROOT, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), BOUND_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -1, "", f"still running after {BOUND_S} s"
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


async def test_every_command_that_connects_fails_in_one_line_when_nothing_answers(tmp_path: Path) -> None:
    kafka_port, redis_port, option_port = closed_port(), closed_port(), closed_port()
    events = tmp_path / "events.jsonl"
    events.write_text(EVENT + "\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEGENGINE_")}
    env = {
        **clean,
        "COLUMNS": "200",
        "SEGENGINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "SEGENGINE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
    }
    kafka = ("cannot reach the Kafka broker: ", kafka_port)
    redis = ("cannot reach Redis: ", redis_port)
    cases: list[tuple[list[str], tuple[str, int], bytes]] = [
        (["run"], kafka, b""),
        (["demo-produce", "--limit", "5"], kafka, b""),
        (["replay", str(events)], kafka, b""),
        (["topics", "create"], kafka, b""),
        (["topics", "list"], kafka, b""),
        (["topics", "describe", "events.dlq"], kafka, b""),
        (["inspect", "c-1"], redis, b""),
        (["segments"], redis, b""),
        (["tail"], kafka, b""),
        (["tail", "--from-beginning", "--exit-at-end"], kafka, b""),
        (["produce", "events.purchase", EVENT], kafka, b""),
        (["produce", "events.purchase", "-"], kafka, (EVENT + "\n").encode()),
        (["rules", "explain", "c-1"], redis, b""),
        (["rules", "simulate", str(SHIPPED_RULES)], redis, b""),
        # an option given wins over the variable
        (["segments", "--redis-url", f"redis://127.0.0.1:{option_port}/0"], ("cannot reach Redis: ", option_port), b""),
        (["topics", "list", "-b", f"127.0.0.1:{option_port}"], ("cannot reach the Kafka broker: ", option_port), b""),
    ]
    group: Any = typer.main.get_command(app)
    if "export" in group.commands:
        cases.append((["export", "--dimension", "value_tier", "--segment", "A"], redis, b""))
    gate = asyncio.Semaphore(PARALLEL)
    results = await asyncio.gather(*(segengine(gate, args, env, stdin) for args, _, stdin in cases))
    for (args, (says, port), _), (code, out, err) in zip(cases, results):
        lines = err.strip().splitlines()
        assert code == 1, (args, code, err)
        assert "Traceback" not in out + err, (args, err)
        assert 1 <= len(lines) <= 3, (args, err)
        assert lines[-1].startswith(f"error: {says}") and str(port) in lines[-1], (args, err)


async def test_under_json_logs_every_line_of_a_failure_is_a_json_object() -> None:
    port = closed_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEGENGINE_")}
    env = {
        **clean,
        "SEGENGINE_LOG_FORMAT": "json",
        "SEGENGINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "SEGENGINE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
    }
    gate = asyncio.Semaphore(PARALLEL)
    for args in (["segments"], ["topics", "list"]):
        code, _, err = await segengine(gate, args, env)
        assert code == 1, (args, err)
        lines = [json.loads(line) for line in err.strip().splitlines()]  # every line parses
        assert lines[-1]["level"] == "ERROR" and lines[-1]["msg"].startswith("cannot reach ") and "exc" not in lines[-1]
        assert all(line["ts"].endswith("Z") for line in lines)
