"""The command line: wiring only.

segengine run     one worker on the configured Kafka and Redis (--embedded: a development stack)
segengine dev     start the embedded stack and keep it up until Ctrl-C
segengine demo    the CDNOW demo on the embedded stack
segengine demo-produce   only produce the demo stream to the configured Kafka
segengine topics create  create the topics of topics/topics.yaml on the configured Kafka
segengine rules check|explain|simulate   rules tooling for marketers
segengine inspect|segments|tail|produce  look customers up, watch changes, send one event
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from datetime import UTC
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console

from .settings import Settings

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings=HELP,
    help="segengine: streaming customer segmentation.",
)
topics_app = typer.Typer(
    no_args_is_help=True, context_settings=HELP, help="Kafka topics, as declared in topics/topics.yaml."
)
app.add_typer(topics_app, name="topics")
rules_app = typer.Typer(
    no_args_is_help=True, context_settings=HELP, help="Check rules, explain a customer's segments, preview a change."
)
app.add_typer(rules_app, name="rules")
out = Console()
console = Console(stderr=True)


def _settings(**overrides: object) -> Settings:
    from .settings import settings_problems, unknown_variables

    for line in unknown_variables(os.environ):
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False, soft_wrap=True)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for line in settings_problems(exc, os.environ):
            console.print(f"[red]invalid setting:[/red] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _logging(settings: Settings) -> None:
    if settings.log_format == "json":
        import json

        class JsonFormatter(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return json.dumps(
                    {
                        "ts": self.formatTime(record),
                        "level": record.levelname,
                        "logger": record.name,
                        "msg": record.getMessage(),
                    }
                )

        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def _run(coro: object) -> None:
    """Run until done; Ctrl-C or SIGTERM cancels the main task so that cleanup runs. An
    expected failure (a dependency out of reach, a port in use) ends in one line and exit
    code 1; the traceback only at debug log level."""

    async def main() -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
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
    except Exception as exc:
        logging.getLogger("segengine").debug("the command failed", exc_info=exc)
        console.print(f"[red]error:[/red] {failure_line(exc)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def failure_line(exc: BaseException) -> str:
    """One line for a command's failure: what could not be done and why. Only the messages of
    connection and OS errors are shown (they name hosts and ports, not customers)."""
    from aiokafka.errors import KafkaConnectionError, KafkaError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    def first_line(e: BaseException) -> str:
        return (str(e).strip().splitlines() or [""])[0]

    from .rules.ruleset import RulesError

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


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        out.print(f"segengine {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """segengine: streaming customer segmentation."""


@app.command()
def run(
    rules: Path | None = typer.Option(None, help="rules file or folder of packs (default: rules/)"),
    clock: str | None = typer.Option(None, help="wall (live) or event (replay of history)"),
    http_port: int | None = typer.Option(
        None, help="serve the HTTP API (/customers, /segments, /healthz, /readyz, /metrics) on this port (0 = off)"
    ),
    embedded: bool | None = typer.Option(
        None,
        "--embedded",
        help="start the embedded broker and Redis for what is not configured (development; env SEGENGINE_EMBEDDED)",
    ),
) -> None:
    """Run one worker on SEGENGINE_KAFKA_BOOTSTRAP and SEGENGINE_REDIS_URL (or, with --embedded, a development stack)."""
    settings = _settings(rules_file=rules, clock=clock, http_port=http_port, embedded=embedded)
    if (missing := settings.missing_connections()) and not settings.embedded:
        console.print(
            f"[red]set {' and '.join(missing)}[/red] (or run with --embedded / SEGENGINE_EMBEDDED=true for a development stack)",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
        raise typer.Exit(2)
    _load_rules_or_exit(settings.rules_file)  # invalid rules: the `rules check` lines, before anything starts
    _logging(settings)

    async def main() -> None:
        from .devstack import stack_for
        from .worker import Worker

        async with stack_for(settings) as (bootstrap, redis_url):
            worker_settings = settings.model_copy(update={"kafka_bootstrap": bootstrap, "redis_url": redis_url})
            worker = Worker(worker_settings)  # serves the HTTP API while it runs, when http_port is set
            logging.getLogger("segengine").info(
                "worker starting: rules %s, clock %s", worker.rules.version, settings.clock
            )
            await worker.run()

    _run(main())


@app.command()
def dev() -> None:
    """Start the embedded broker and Redis on free loopback ports; keep them up until Ctrl-C."""
    settings = _settings()
    _logging(settings)

    async def main() -> None:
        from .devstack import stack_for

        async with stack_for(settings) as (bootstrap, redis_url):
            console.print(f"Kafka  [bold]{bootstrap}[/bold]\nRedis  [bold]{redis_url}[/bold]")
            console.print(
                f"export SEGENGINE_KAFKA_BOOTSTRAP={bootstrap} SEGENGINE_REDIS_URL={redis_url}",
                soft_wrap=True,
                highlight=False,
            )
            console.print("Ctrl-C stops both.")
            await asyncio.Event().wait()

    _run(main())


@app.command()
def demo(
    limit: int | None = typer.Option(None, help="replay only the first N events (default: all)"),
) -> None:
    """Replay the CDNOW purchase history (plus synthetic browse/feedback/profile events) through the engine."""
    settings = _settings(clock="event", quantiles_refresh_s=10)  # a replay moves fast: rank against a fresh population
    _logging(settings.model_copy(update={"log_level": "WARNING"}))
    from .demo import run_demo

    _run(run_demo(settings, limit=limit))


def _require_kafka(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        console.print("[red]set SEGENGINE_KAFKA_BOOTSTRAP[/red] (or use `segengine dev` for an embedded broker)")
        raise typer.Exit(2)
    return settings.kafka_bootstrap


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic of topics/topics.yaml that does not exist yet (idempotent)."""
    settings = _settings()
    _logging(settings)
    bootstrap = _require_kafka(settings)

    async def create() -> None:
        from .topics import create_topics, load_topics

        created = await create_topics(bootstrap, load_topics(settings.topics_file))
        console.print(f"created {len(created)} topics: {', '.join(created) or '(all existed)'}")

    _run(create())


@app.command("demo-produce")
def demo_produce(limit: int | None = typer.Option(None, help="only the first N events")) -> None:
    """Produce the demo stream (CDNOW + synthetic events) to the configured Kafka, without running a worker."""
    settings = _settings()
    _logging(settings)
    bootstrap = _require_kafka(settings)
    from .demo import produce_demo

    _run(produce_demo(bootstrap, limit))


@app.command()
def replay(
    file: Path | None = typer.Argument(
        None, help="the events file (cdnow: default the copy shipped in the lifetimes package)"
    ),
    fmt: str = typer.Option(..., "--format", help="cdnow, csv or jsonl"),
    speed: str = typer.Option("max", help="max, or Nx: N times real time from the first event's time"),
    until: str | None = typer.Option(None, help="stop after this event date (YYYY-MM-DD, inclusive) or RFC 3339 time"),
) -> None:
    """Backfill: produce a file of historical events into the input topics in event-time order (run workers with SEGENGINE_CLOCK=event)."""
    settings = _settings()
    _logging(settings)
    bootstrap = _require_kafka(settings)
    from .replay import ReplayError, prepare, replay_with_progress

    try:
        records, pace = prepare(file, fmt, speed, until)
    except ReplayError as exc:
        console.print(f"cannot replay: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    _run(replay_with_progress(bootstrap, records, pace, progress_to=console, report_to=out))


def _at(at: str | None) -> int:
    """--at: an RFC 3339 time or a date (for replayed history); default the wall clock."""
    from datetime import datetime

    from .clock import wall_ms

    if at is None:
        return wall_ms()
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError:
        console.print(f"[red]--at {at!r} is not a date or an RFC 3339 time[/red]")
        raise typer.Exit(2) from None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)


def _load_rules_or_exit(path: Path):  # type: ignore[no-untyped-def]
    from .rules import check_files
    from .rules.ruleset import RulesError

    try:
        rules, problems = check_files(path)
    except RulesError as exc:  # no rules to check at all (an empty folder)
        rules, problems = None, exc.problems
    for problem in problems:
        console.print(problem, markup=False, highlight=False, soft_wrap=True)
    if rules is None:
        raise typer.Exit(1)
    return rules


def _require_redis(settings: Settings) -> str:
    if not settings.redis_url:
        console.print("[red]set SEGENGINE_REDIS_URL[/red] to the engine's Redis")
        raise typer.Exit(2)
    return settings.redis_url


@rules_app.command("check")
def rules_check(path: Path = typer.Argument(..., help="a rules file or a folder of rule packs")) -> None:
    """Exit 1 with file:line:column: message for every error; 0 when the rules are valid."""
    rules = _load_rules_or_exit(path)
    dims = ", ".join(f"{d.name} ({len(d.segments) + (d.default is not None)})" for d in rules.dimensions)
    out.print(f"ok: {rules.version}: {len(rules.dimensions)} dimensions: {dims}", highlight=False)


@rules_app.command("explain")
def rules_explain(
    customer_id: str,
    rules_path: Path | None = typer.Option(None, "--rules", help="rules (default: SEGENGINE_RULES_FILE)"),
    at: str | None = typer.Option(None, help="evaluate at this time (default: now)"),
    as_json: bool = typer.Option(False, "--json", help="JSON output for scripts"),
) -> None:
    """A customer's features, and for each dimension the segment, the rule that matched and the values it read."""
    settings = _settings(rules_file=rules_path)
    redis_url = _require_redis(settings)
    rules = _load_rules_or_exit(settings.rules_file)

    async def main() -> None:
        from .rules.tools import explain
        from .state import CustomerState
        from .store_redis import RedisStore, connect

        redis = connect(redis_url)
        try:
            loaded = await RedisStore(redis).load_state(customer_id)
        finally:
            await redis.aclose()
        if loaded.blob is None:
            console.print(f"[red]no state for customer {customer_id!r}[/red]")
            raise typer.Exit(1)
        report = explain(rules, CustomerState.loads(loaded.blob), _at(at))
        if as_json:
            import orjson

            sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
            return
        from rich.table import Table

        table = Table(title=f"{customer_id}: segments ({report['rules_version']})")
        for column in ("dimension", "stored", "now", "rule", "values read"):
            table.add_column(column)
        for name, d in report["dimensions"].items():
            table.add_row(
                name,
                str(d["stored"]),
                str(d["segment"]),
                d["reason"],
                ", ".join(f"{k}={v}" for k, v in d["read"].items()),
            )
        out.print(table)
        features = Table(title="features")
        features.add_column("feature")
        features.add_column("value", justify="right")
        for k, v in report["features"].items():
            if v not in (None, 0, 0.0):
                features.add_row(k, str(v))
        out.print(features)

    _run(main())


@rules_app.command("simulate")
def rules_simulate(
    new_rules: Path = typer.Argument(..., help="the rules file or folder to preview"),
    at: str | None = typer.Option(None, help="evaluate at this time (default: now)"),
    sample: int | None = typer.Option(None, help="only the first N customers found"),
    as_json: bool = typer.Option(False, "--json", help="JSON output for scripts"),
) -> None:
    """Who would move if NEW_RULES went live: per dimension, a from -> to matrix. Emits nothing."""
    settings = _settings()
    redis_url = _require_redis(settings)
    rules = _load_rules_or_exit(new_rules)
    now = _at(at)

    async def main() -> None:
        from collections import Counter

        from rich.progress import Progress

        from .rules.tools import simulate
        from .state import CustomerState
        from .store_redis import RedisStore, connect

        redis = connect(redis_url)
        store = RedisStore(redis)
        totals: dict[str, Counter[tuple[str | None, str | None]]] = {}
        present: set[str] = set()  # aggregation keys found in the stored states
        seen = 0
        try:
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("evaluating customers", total=None)
                async for ids in store.scan_customers():
                    ids = ids[: None if sample is None else max(0, sample - seen)]
                    loaded = await store.load(ids)
                    states = [CustomerState.loads(row.blob) for row in loaded.values() if row.blob is not None]
                    present.update(k for st in states for k in st.aggs)
                    for dim, counts in simulate(rules, states, now).items():
                        totals.setdefault(dim, Counter()).update(counts)
                    seen += len(ids)
                    progress.update(task, completed=seen)
                    if sample is not None and seen >= sample:
                        break
        finally:
            await redis.aclose()
        fresh = [a.name for a in rules.aggregates if a.key not in present]
        if fresh and seen:
            console.print(
                f"[yellow]note:[/yellow] aggregations new or changed in this file have no history yet: {', '.join(fresh)}; "
                "customers are previewed as if they were empty (they fill from the switch on; replay history to backfill)"
            )
        if as_json:
            import orjson

            report = {
                d: [{"from": a, "to": b, "customers": n} for (a, b), n in sorted(c.items(), key=str)]
                for d, c in totals.items()
            }
            sys.stdout.write(
                orjson.dumps({"customers": seen, "rules_version": rules.version, "moves": report}).decode() + "\n"
            )
            return
        from rich.table import Table

        out.print(f"{seen:,} customers evaluated with {rules.version}; nothing was emitted")
        for dim, counts in totals.items():
            table = Table(title=f"{dim}: from -> to")
            for column in ("from", "to", "customers", ""):
                table.add_column(column)
            for (a, b), n in sorted(counts.items(), key=lambda kv: -kv[1]):
                table.add_row(str(a), str(b), f"{n:,}", "" if a == b else "moves")
            out.print(table)

    _run(main())


# -- looking customers up, watching changes, sending one event (logic: engine/inspect.py) ----


def _print_json(value: object) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


@app.command("inspect")
def inspect_customer(
    customer_id: str,
    at: str | None = typer.Option(None, help="features at this time (default: now)"),
    as_json: bool = typer.Option(False, "--json", help="JSON output (what GET /customers/{id} returns)"),
) -> None:
    """A customer's memberships, features, next check time and last changes. Exit 1 if unknown (or erased)."""
    from .inspect import check_customer_id, customer_report, customer_tables
    from .store_redis import RedisStore, connect

    settings = _settings()
    redis_url = _require_redis(settings)
    if (problem := check_customer_id(customer_id)) is not None:
        console.print(f"[red]{problem}[/red]")
        raise typer.Exit(2)
    rules, now = _load_rules_or_exit(settings.rules_file), _at(at)

    async def main() -> None:
        redis = connect(redis_url)
        try:
            report = await customer_report(RedisStore(redis), rules, customer_id, now)
        finally:
            await redis.aclose()
        if report is None:
            console.print("[red]unknown customer[/red] (never seen, or erased)")
            raise typer.Exit(1)
        if as_json:
            return _print_json(report)
        for table in customer_tables(report):
            out.print(table)

    _run(main())


@app.command()
def segments(
    as_json: bool = typer.Option(False, "--json", help="JSON output (the population part of GET /segments)"),
) -> None:
    """Customers per dimension and segment: the exact counters the workers keep."""
    from .inspect import population_table, segments_report
    from .store_redis import RedisStore, connect

    redis_url = _require_redis(_settings())

    async def main() -> None:
        redis = connect(redis_url)
        try:
            report = await segments_report(RedisStore(redis))
        finally:
            await redis.aclose()
        if as_json:
            return _print_json(report)
        out.print(population_table(report["population"]))

    _run(main())


@app.command()
def tail(
    dimension: str | None = typer.Option(None, help="only changes of this dimension"),
    segment: str | None = typer.Option(None, help="only changes from or to this segment"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="start at the oldest record kept, not now"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line, with its topic"),
) -> None:
    """Follow segment changes and actions live (segments.changes, actions.*) until Ctrl-C; filtered, actions show with their change."""
    from .inspect import TailFilter, describe, follow

    bootstrap = _require_kafka(_settings())
    wanted = TailFilter(dimension, segment)

    async def main() -> None:
        async for topic, record in follow(bootstrap, from_beginning=from_beginning):
            if not wanted(topic, record):
                continue
            if as_json:
                import orjson

                sys.stdout.write(orjson.dumps({"topic": topic, **record}).decode() + "\n")
                sys.stdout.flush()
            else:
                out.print(describe(topic, record), markup=False, highlight=False, soft_wrap=True)

    _run(main())


@app.command()
def produce(
    topic: str = typer.Argument(
        ..., help="an input topic: events.browse, events.purchase, events.feedback, events.profile"
    ),
    event: str = typer.Argument(..., help="the event as JSON ('-': read it from stdin)"),
) -> None:
    """Send one hand-written event, checked first as the engine checks it; a rejected one prints its reason code and exits 1."""
    from .clock import wall_ms
    from .events import Rejected
    from .inspect import check_event, produce_event

    settings = _settings()
    text = sys.stdin.read() if event == "-" else event
    checked = check_event(
        topic,
        text,
        now_ms=wall_ms(),
        max_bytes=settings.max_event_bytes,
        future_skew_ms=int(settings.future_skew_s * 1000),
    )
    if isinstance(checked, Rejected):
        console.print(f"rejected: {checked.code}: {checked.message}", markup=False, highlight=False)
        raise typer.Exit(1)
    bootstrap = _require_kafka(settings)

    async def main() -> None:
        partition, offset = await produce_event(bootstrap, checked)
        out.print(
            f"sent {checked.type} {checked.event_id} to {topic} partition {partition} offset {offset}",
            markup=False,
            highlight=False,
        )

    _run(main())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
