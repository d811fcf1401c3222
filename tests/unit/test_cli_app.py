"""The command line's shape and its pure helpers, without a broker or Redis: every command
under its name and in the order `segengine --help` lists them, flags without a value
placeholder, the variable behind each option named in its help, -b/--bootstrap and
--redis-url wherever a command connects, importing the CLI loads none of the heavy modules a
command needs only when it runs, and a failure or a bad --at is one line."""

from __future__ import annotations

import errno
import subprocess
import sys
from typing import Any

import pytest
import typer
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError
from typer.core import TyperOption
from typer.testing import CliRunner

from segengine.cli import app
from segengine.commands.common import at_ms, failure_line
from segengine.rules import RulesError
from segengine.settings import Settings, env_name
from segengine.topics import TopicsError

WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}  # one help row per option
# the options that stand for a setting, and that setting
SETTING_OF = {
    "--bootstrap": "kafka_bootstrap",
    "--redis-url": "redis_url",
    "--rules": "rules_file",
    "--clock": "clock",
    "--http-port": "http_port",
    "--embedded": "embedded",
}
# what each command connects to: Kafka (-b/--bootstrap) and/or Redis (--redis-url)
CONNECTS = {
    ("run",): {"--bootstrap", "--redis-url"},
    ("demo-produce",): {"--bootstrap"},
    ("replay",): {"--bootstrap"},
    ("inspect",): {"--redis-url"},
    ("segments",): {"--redis-url"},
    ("tail",): {"--bootstrap"},
    ("produce",): {"--bootstrap"},
    ("topics", "create"): {"--bootstrap"},
    ("topics", "list"): {"--bootstrap"},
    ("topics", "describe"): {"--bootstrap"},
    ("rules", "explain"): {"--redis-url"},
    ("rules", "simulate"): {"--redis-url"},
    ("export",): {"--redis-url"},
    ("rebuild",): {"--bootstrap", "--redis-url"},
    ("discover",): {"--redis-url"},
}


def every_command() -> list[tuple[tuple[str, ...], Any]]:
    """(path, click command) for the root, every group and every command."""
    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(path: tuple[str, ...], command: Any) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk((*path, name), sub)

    walk((), typer.main.get_command(app))
    return found


def test_every_command_keeps_its_name_and_place_in_the_help() -> None:
    group: Any = typer.main.get_command(app)
    assert list(group.list_commands(None)) == [
        "run", "dev", "demo", "demo-produce", "replay", "inspect", "segments", "tail", "produce", "export", "rebuild",
        "discover",
        "topics", "rules", "fit", "native",
    ]  # fmt: skip
    assert list(group.commands["topics"].list_commands(None)) == ["create", "list", "describe"]
    assert list(group.commands["rules"].list_commands(None)) == ["check", "explain", "simulate"]
    assert list(group.commands["native"].list_commands(None)) == ["build", "status", "remove"]
    options = {p.name: p.opts for p in group.commands["replay"].params}
    assert options["fmt"] == ["--format"]


def test_flags_show_no_placeholder_and_options_that_take_a_value_keep_one() -> None:
    runner = CliRunner()
    for path, command in every_command():
        shown = runner.invoke(app, [*path, "--help"], env=WIDE)
        assert shown.exit_code == 0, (path, shown.output)
        assert "<bool>" not in shown.output, (path, shown.output)
        ctx = typer.Context(command)
        for param in command.get_params(ctx):
            if isinstance(param, TyperOption):
                placeholder = param.display_type_rich(ctx)
                assert bool(placeholder) != param.is_flag, (path, param.opts, placeholder)


def test_help_names_the_setting_variable_behind_each_option() -> None:
    runner = CliRunner()
    named = 0
    for path, command in every_command():
        rows = runner.invoke(app, [*path, "--help"], env=WIDE).output.splitlines()
        for param in command.params:
            for opt in set(param.opts) & set(SETTING_OF):
                variable = env_name(SETTING_OF[opt])
                assert SETTING_OF[opt] in Settings.model_fields
                (row,) = [r for r in rows if f" {opt} " in r]
                assert f"[env var: {variable}]" in row, (path, row)
                named += 1
    assert named >= 15


def test_every_command_that_connects_takes_its_servers_as_options() -> None:
    commands = dict(every_command())
    for path, wanted in CONNECTS.items():
        options = {o: p for p in commands[path].params for o in p.opts}
        assert wanted <= set(options), (path, sorted(options))
        if "--bootstrap" in wanted:
            assert "-b" in options["--bootstrap"].opts
        for opt in wanted:
            assert options[opt].default is None  # unset: the environment decides (load_settings)


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
    # a topics or rules file at fault is named as it is (files and fields, no customer data)
    assert failure_line(TopicsError("topics.yaml: topic #2: missing field 'name'")) == (
        "topics.yaml: topic #2: missing field 'name'"
    )
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
