"""What every command shares: the two consoles, settings, logging, running a coroutine to
the end, one line for a failure, and the checks that stop a command before it starts.

Exit codes: 0 done; 1 the command failed (invalid rules, a dependency out of reach, a
rejected event, an unknown customer); 2 it was called wrongly (a setting missing or invalid).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from ..settings import Settings

if TYPE_CHECKING:
    from ..rules import RuleSet

out = Console()
console = Console(stderr=True)


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment, with the command's options on top (an option left
    unset is None and does not override). Values are checked by ``Settings``: an invalid
    one is reported in one line per problem and the command exits 2."""
    from ..settings import settings_problems, unknown_variables

    for line in unknown_variables(os.environ):
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False, soft_wrap=True)
    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        for line in settings_problems(exc, os.environ):
            console.print(f"[red]invalid setting:[/red] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


class JsonFormatter(logging.Formatter):
    """One JSON object per log record (SEGENGINE_LOG_FORMAT=json)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": self.formatTime(record),
                "level": record.levelname,
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def run_until_done(coro: Coroutine[Any, Any, object]) -> None:
    """Run until done; Ctrl-C or SIGTERM cancels the main task so that cleanup runs. An
    expected failure (a dependency out of reach, a port in use) ends in one line and exit
    code 1; the traceback only at debug log level."""

    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            console.print("[yellow]stopped[/yellow]")

    try:
        asyncio.run(main())
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # the command's failure, said in one line
        logging.getLogger("segengine").debug("the command failed", exc_info=exc)
        console.print(f"[red]error:[/red] {failure_line(exc)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def failure_line(exc: BaseException) -> str:
    """One line for a command's failure: what could not be done and why. Only the messages of
    connection and OS errors are shown (they name hosts and ports, not customers)."""
    from aiokafka.errors import KafkaConnectionError, KafkaError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from ..rules.ruleset import RulesError

    def first_line(e: BaseException) -> str:
        return (str(e).strip().splitlines() or [""])[0]

    if isinstance(exc, RulesError):
        return f"invalid rules: {exc.problems[0]}" + (
            f" (and {len(exc.problems) - 1} more: segengine rules check)" if len(exc.problems) > 1 else ""
        )
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return f"cannot reach Redis: {first_line(exc)}"
    if isinstance(exc, KafkaConnectionError):
        return f"cannot reach the Kafka broker: {first_line(exc)}"
    if isinstance(exc, KafkaError):
        return f"Kafka: {type(exc).__name__}: {first_line(exc)}"
    if isinstance(exc, OSError):
        if exc.errno == 98:
            return f"address already in use: {first_line(exc)}"
        return f"{type(exc).__name__}: {first_line(exc)}"
    return f"{type(exc).__name__} (run with SEGENGINE_LOG_LEVEL=DEBUG for the traceback)"


# -- checks that stop a command before it starts ----------------------------------------------


def require_kafka(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        console.print("[red]set SEGENGINE_KAFKA_BOOTSTRAP[/red] (or use `segengine dev` for an embedded broker)")
        raise typer.Exit(2)
    return settings.kafka_bootstrap


def require_redis(settings: Settings) -> str:
    if not settings.redis_url:
        console.print("[red]set SEGENGINE_REDIS_URL[/red] to the engine's Redis")
        raise typer.Exit(2)
    return settings.redis_url


def load_rules_or_exit(path: Path) -> RuleSet:
    """The rules at ``path``; invalid ones print the ``rules check`` lines and exit 1."""
    from ..rules import check_files
    from ..rules.ruleset import RulesError

    rules: RuleSet | None
    try:
        rules, problems = check_files(path)
    except RulesError as exc:  # no rules to check at all (an empty folder)
        rules, problems = None, exc.problems
    for problem in problems:
        console.print(problem, markup=False, highlight=False, soft_wrap=True)
    if rules is None:
        raise typer.Exit(1)
    return rules


def at_ms(at: str | None) -> int:
    """--at: an RFC 3339 time or a date (for replayed history); default the wall clock."""
    from datetime import datetime

    from ..clock import wall_ms

    if at is None:
        return wall_ms()
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError:
        console.print(f"[red]--at {at!r} is not a date or an RFC 3339 time[/red]")
        raise typer.Exit(2) from None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)


def print_json(value: object) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
