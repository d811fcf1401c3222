"""The command line's shape and its pure helpers, without a broker or Redis: every command
under its name and in the order `segengine --help` lists them, importing the CLI loads none
of the heavy modules a command needs only when it runs, and a failure or a bad --at is one line."""

from __future__ import annotations

import errno
import subprocess
import sys
from typing import Any

import pytest
import typer
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError

from segengine.cli import app
from segengine.commands.common import at_ms, failure_line
from segengine.rules import RulesError


def test_every_command_keeps_its_name_and_place_in_the_help() -> None:
    group: Any = typer.main.get_command(app)
    assert list(group.list_commands(None)) == [
        "run", "dev", "demo", "demo-produce", "replay", "inspect", "segments", "tail", "produce", "topics", "rules",
    ]  # fmt: skip
    assert list(group.commands["topics"].list_commands(None)) == ["create"]
    assert list(group.commands["rules"].list_commands(None)) == ["check", "explain", "simulate"]
    options = {p.name: p.opts for p in group.commands["replay"].params}
    assert options["fmt"] == ["--format"]


def test_importing_the_command_line_loads_no_command_dependencies() -> None:
    heavy = ("aiokafka", "redis", "orjson", "segengine.worker", "segengine.pipeline", "segengine.rules", "rich.table")
    probe = f"import sys, segengine.cli; print([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


def test_a_failure_is_one_line_naming_what_could_not_be_done() -> None:
    assert failure_line(RulesError("a.yaml:1:1: x", ["a.yaml:1:1: x"])) == "invalid rules: a.yaml:1:1: x"
    assert failure_line(RulesError("two", ["a:1:1: x", "a:2:1: y"])) == (
        "invalid rules: a:1:1: x (and 1 more: segengine rules check)"
    )
    assert (
        failure_line(RedisConnectionError("Error 111 connecting\nmore")) == "cannot reach Redis: Error 111 connecting"
    )
    assert failure_line(KafkaConnectionError("no broker")).startswith("cannot reach the Kafka broker: ")
    assert failure_line(OSError(errno.EADDRINUSE, "in use")) == "address already in use: [Errno 98] in use"
    # anything else may carry customer data: only its type, and how to see the traceback
    assert failure_line(ValueError("customer c-1 spent 12")) == (
        "ValueError (run with SEGENGINE_LOG_LEVEL=DEBUG for the traceback)"
    )


def test_at_takes_a_date_or_an_rfc3339_time_and_refuses_anything_else() -> None:
    assert at_ms("1997-01-01") == 852_076_800_000  # a date without a zone is UTC midnight
    assert at_ms("1997-01-01T01:00:00+01:00") == 852_076_800_000
    with pytest.raises(typer.Exit) as refused:
        at_ms("yesterday")
    assert refused.value.exit_code == 2
