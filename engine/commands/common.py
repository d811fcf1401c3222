"""What every command shares: the two consoles, settings and the options that override them,
logging, running a coroutine to the end, one line for a failure, and the checks that stop a
command before it starts.

Exit codes, for every command:

    0    done (SIGTERM: a graceful stop, e.g. `run` under an orchestrator, is done too)
    1    the command failed: invalid rules, a dependency out of reach, a rejected event, an
         unknown customer or topic, a file that cannot be replayed
    2    it was called wrongly: a setting missing or invalid, an unknown option value
         (a --dimension the rules do not have, a file whose format cannot be told)
    130  interrupted (Ctrl-C, SIGINT), after the command's cleanup ran
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from ..settings import Settings, env_name

if TYPE_CHECKING:
    from ..rules import RuleSet

FAILED, USAGE, INTERRUPTED = 1, 2, 130

out = Console()
console = Console(stderr=True)
log = logging.getLogger("segengine")


# -- options shared by the commands -----------------------------------------------------------


def env_help(text: str, field: str) -> str:
    """An option's help naming the variable behind it (``Settings.field``), in the style typer
    uses for ``show_envvar``. The option itself does not read the variable: ``Settings`` does,
    and an option that is given overrides it (``load_settings``)."""
    return rf"{text} [dim yellow]\[env var: {env_name(field)}][/dim yellow]"


Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        "-b",
        metavar="HOST:PORT",
        help=env_help("the Kafka bootstrap servers, host:port[,host:port]", "kafka_bootstrap"),
    ),
]
RedisUrl = Annotated[
    str | None,
    typer.Option("--redis-url", metavar="URL", help=env_help("the engine's Redis, redis://host:port/db", "redis_url")),
]
RulesPath = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        metavar="PATH",
        help=env_help("rules file or folder of packs (default: the shipped packs)", "rules_file"),
    ),
]


# -- settings and logging ---------------------------------------------------------------------


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment, with the command's options on top (an option left
    unset is None and does not override), and logging configured from them. Values are
    checked by ``Settings``: an invalid one is reported in one line per problem and the
    command exits 2."""
    from ..settings import settings_problems, unknown_variables

    for line in unknown_variables(os.environ):
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False, soft_wrap=True)
    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        for line in settings_problems(exc, os.environ):
            console.print(f"[red]invalid setting:[/red] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE) from None
    configure_logging(settings)
    return settings


class JsonFormatter(logging.Formatter):
    """One JSON object per log record (SEGENGINE_LOG_FORMAT=json): ``ts`` (ISO 8601, UTC,
    milliseconds), ``level``, ``logger``, ``pid`` (which of ``run --processes N``'s workers,
    the supervisor logs each one's), ``msg``, and ``exc`` (the traceback) when the record
    carries one."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc)


# The process id tells apart the lines of `run --processes N`'s workers, which share the
# supervisor's output (it logs "worker process <index> started: pid <pid>").
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    # aiokafka logs every failed connection attempt as an error: the outage watch and a
    # command's one-line failure say it (naming the broker) instead, except at debug level
    logging.getLogger("aiokafka").setLevel(logging.DEBUG if settings.log_level.upper() == "DEBUG" else logging.CRITICAL)


def json_logs() -> bool:
    """Whether logs are JSON lines (then a command's last word is one too)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def redacted(url: str) -> str:
    """A URL to print: its password, if any, as ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def say_error(line: str) -> None:
    """A command's one-line failure on stderr: ``error: ...``, or a JSON log record when
    logs are JSON."""
    if json_logs():
        log.error(line)
    else:
        console.print(f"[red]error:[/red] {escape(line)}", markup=True, highlight=False, soft_wrap=True)


def refuse(line: str, code: int = USAGE) -> NoReturn:
    """Stop the command with one line (not a rich markup string) and ``code``."""
    if json_logs():
        log.error(line)
    else:
        console.print(line, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# -- running a command ------------------------------------------------------------------------


def run_until_done(coro: Coroutine[Any, Any, object]) -> None:
    """Run until done; Ctrl-C or SIGTERM cancels the main task so that cleanup runs, then
    Ctrl-C exits 130 and SIGTERM 0 (a graceful stop). An expected failure (a dependency out
    of reach, a port in use) ends in one line and exit code 1; the traceback only at debug
    log level."""
    signals: list[signal.Signals] = []

    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()

        def stop(sig: signal.Signals) -> None:
            signals.append(sig)
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
        try:
            await task
        except asyncio.CancelledError:
            if json_logs():
                log.info("stopped")
            else:
                console.print("[yellow]stopped[/yellow]")
            if not signals:  # cancelled from inside: the command did not finish
                raise typer.Exit(FAILED) from None

    try:
        asyncio.run(main())
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # the command's failure, said in one line
        log.debug("the command failed", exc_info=exc)
        say_error(failure_line(exc))
        raise typer.Exit(FAILED) from None
    if signals and signals[0] is signal.SIGINT:
        raise typer.Exit(INTERRUPTED)


def failure_line(exc: BaseException) -> str:
    """One line for a command's failure: what could not be done and why. Only the messages of
    connection and OS errors, and of configuration errors (a topics or rules file), are shown
    (they name hosts, ports and files, not customers)."""
    from aiokafka.errors import KafkaConnectionError, KafkaError
    from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from ..errors import ConfigError, DevStackError, ProcessingError, SegengineError
    from ..rules.ruleset import RulesError

    def first_line(e: BaseException) -> str:
        line = (str(e).strip().splitlines() or [""])[0]
        return line.removeprefix(f"{type(e).__name__}: ")  # aiokafka's errors repeat their class name

    if isinstance(exc, RulesError):
        return f"invalid rules: {exc.problems[0]}" + (
            f" (and {len(exc.problems) - 1} more: segengine rules check)" if len(exc.problems) > 1 else ""
        )
    if isinstance(exc, (ConfigError, DevStackError)):
        return first_line(exc)
    if isinstance(exc, AuthenticationError):  # reached, and refused: the message names the user at most
        return f"Redis refused the login: {first_line(exc)}"
    if isinstance(exc, NoPermissionError) or (isinstance(exc, ResponseError) and "can't run this command" in str(exc)):
        return f"Redis refused a command to the engine's user (its ACL): {first_line(exc)}"
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return f"cannot reach Redis: {first_line(exc)}"
    if isinstance(exc, KafkaConnectionError):
        return f"cannot reach the Kafka broker: {first_line(exc)}"
    if isinstance(exc, KafkaError):
        return f"Kafka: {type(exc).__name__}: {first_line(exc)}"
    if isinstance(exc, SegengineError) and not isinstance(exc, ProcessingError):  # ours: no customer data
        return f"{type(exc).__name__}: {first_line(exc)}"
    if isinstance(exc, OSError):
        if exc.errno == 98:
            return f"address already in use: {first_line(exc)}"
        return f"{type(exc).__name__}: {first_line(exc)}"
    return f"{type(exc).__name__} (run with SEGENGINE_LOG_LEVEL=DEBUG for the traceback)"


# -- checks that stop a command before it starts ----------------------------------------------


def require_kafka(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        refuse("set SEGENGINE_KAFKA_BOOTSTRAP or give -b/--bootstrap (`segengine dev` starts an embedded broker)")
    return settings.kafka_bootstrap


def kafka_security(settings: Settings) -> Mapping[str, Any]:
    """The TLS/SASL arguments of the command's Kafka clients (segengine.kafka); TLS files that
    do not load end the command in one line, exit 1."""
    from ..errors import ConfigError
    from ..kafka import kafka_security_kwargs

    try:
        return kafka_security_kwargs(settings)
    except ConfigError as exc:
        say_error(str(exc))
        raise typer.Exit(1) from None


def require_redis(settings: Settings) -> str:
    if not settings.redis_url:
        refuse("set SEGENGINE_REDIS_URL or give --redis-url (the engine's Redis)")
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
        raise typer.Exit(FAILED)
    return rules


def at_ms(at: str | None) -> int:
    """--at: an RFC 3339 time or a date (for replayed history); default the wall clock."""
    from ..clock import wall_ms

    if at is None:
        return wall_ms()
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError:
        refuse(f"--at {at!r} is not a date or an RFC 3339 time")
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)


def print_json(value: object) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


async def reach_kafka(bootstrap: str, security: Mapping[str, Any] | None = None) -> None:
    """Fail (KafkaConnectionError) unless the broker answers: for a command that would first
    spend time reading its input, or that holds a client it cannot close cleanly on failure."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    try:
        await admin.start()
    finally:
        await admin.close()
