"""Commands that run the engine or feed it: run, dev, demo, demo-produce, replay
(the topics commands: engine/commands/topics.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from ..heap import settle_heap
from ..settings import Settings
from .common import (
    FAILED,
    INTERRUPTED,
    USAGE,
    Bootstrap,
    RedisUrl,
    RulesPath,
    configure_logging,
    console,
    env_help,
    json_logs,
    kafka_security,
    load_rules_or_exit,
    load_settings,
    out,
    reach_kafka,
    redacted,
    refuse,
    require_kafka,
    run_until_done,
)


def run(
    rules: RulesPath = None,
    clock: str | None = typer.Option(
        None, metavar="wall|event", help=env_help("wall (live) or event (replay of history)", "clock")
    ),
    http_port: int | None = typer.Option(
        None,
        metavar="PORT",
        help=env_help("serve the HTTP API (/customers, /segments, /healthz, /readyz, /metrics); 0 = off", "http_port"),
    ),
    embedded: bool | None = typer.Option(
        None,
        "--embedded",
        help=env_help("start the embedded broker and Redis for what is not configured (development)", "embedded"),
    ),
    processes: int | None = typer.Option(
        None,
        "--processes",
        metavar="N",
        help=env_help("worker processes, 1 to 64, in one consumer group behind one HTTP API", "processes"),
    ),
    bootstrap: Bootstrap = None,
    redis_url: RedisUrl = None,
) -> None:
    """Run one worker on the configured Kafka and Redis (--embedded: a development stack);
    --processes N: N workers in one consumer group, behind one HTTP API.

    SIGTERM stops it gracefully (exit 0); Ctrl-C too, with exit code 130."""
    settings = load_settings(
        rules_file=rules, clock=clock, http_port=http_port, embedded=embedded,
        kafka_bootstrap=bootstrap, redis_url=redis_url, processes=processes,
    )  # fmt: skip
    if (missing := settings.missing_connections()) and not settings.embedded:
        console.print(
            f"[red]set {' and '.join(missing)}[/red] "
            "(or run with --embedded / SEGENGINE_EMBEDDED=true for a development stack)",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
        raise typer.Exit(2)
    load_rules_or_exit(settings.rules_file)  # invalid rules: the `rules check` lines, before anything starts
    if settings.processes > 1:
        run_until_done(_supervise(settings))
        return

    async def main() -> None:
        from ..devstack import stack_for
        from ..worker import Worker

        async with stack_for(settings) as (kafka, redis):
            worker_settings = settings.model_copy(update={"kafka_bootstrap": kafka, "redis_url": redis})
            worker = Worker(worker_settings)  # serves the HTTP API while it runs, when http_port is set
            logging.getLogger("segengine").info(
                "worker starting: rules %s, clock %s", worker.rules.version, settings.clock
            )
            settle_heap(settings.gc_sweep_s)
            await worker.run()

    run_until_done(main())


async def _supervise(settings: Settings) -> None:
    """``settings.processes`` workers under one supervisor (segengine.processes), on the
    embedded stack's addresses when it is asked for, which every worker then shares."""
    import os
    import signal

    from ..devstack import stack_for
    from ..processes import Supervisor, input_partitions

    if settings.processes > (partitions := input_partitions(settings)):
        logging.getLogger("segengine").warning(
            "%d worker processes for %d input partitions: %d will own none, and the set is never ready",
            settings.processes, partitions, settings.processes - partitions,
        )  # fmt: skip
    async with stack_for(settings) as (kafka, redis):
        resolved = settings.model_copy(update={"kafka_bootstrap": kafka, "redis_url": redis})
        stopped_by = await Supervisor(resolved, os.environ).run()
    if json_logs():
        logging.getLogger("segengine").info("stopped")
    else:
        console.print("[yellow]stopped[/yellow]")
    if stopped_by is signal.SIGINT:
        raise typer.Exit(INTERRUPTED)


def dev(
    env_file: Path | None = typer.Option(
        None,
        "--env-file",
        metavar="PATH",
        help="also write the two variables to this file (KEY=value lines: `set -a; . PATH`, docker --env-file)",
    ),
) -> None:
    """Start the embedded broker and Redis on free loopback ports; keep them up until Ctrl-C."""
    settings = load_settings()

    async def main() -> None:
        from ..devstack import stack_for

        async with stack_for(settings) as (bootstrap, redis_url):
            shown = redacted(redis_url)  # a configured Redis's password is never printed
            console.print(f"Kafka  [bold]{bootstrap}[/bold]\nRedis  [bold]{shown}[/bold]")
            console.print(
                f"export SEGENGINE_KAFKA_BOOTSTRAP={bootstrap} SEGENGINE_REDIS_URL={shown}",
                soft_wrap=True,
                highlight=False,
            )
            if env_file is not None:
                env_file.write_text(f"SEGENGINE_KAFKA_BOOTSTRAP={bootstrap}\nSEGENGINE_REDIS_URL={redis_url}\n")
                console.print(f"written to {env_file}", highlight=False)
            console.print("Ctrl-C stops both.")
            await asyncio.Event().wait()

    run_until_done(main())


def demo(
    limit: int | None = typer.Option(None, metavar="N", help="replay only the first N events (default: all)"),
) -> None:
    """Replay the CDNOW purchase history (plus synthetic browse/feedback/profile events) through the engine."""
    # a replay moves fast: rank against a fresh population
    settings = load_settings(clock="event", quantiles_refresh_s=10)
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    from ..demo import run_demo

    run_until_done(run_demo(settings, limit=limit))


def demo_produce(
    limit: int | None = typer.Option(None, metavar="N", help="only the first N events"),
    bootstrap: Bootstrap = None,
) -> None:
    """Produce the demo stream (CDNOW + synthetic events) to the configured Kafka, without running a worker."""
    settings = load_settings(kafka_bootstrap=bootstrap)
    kafka = require_kafka(settings)
    security = kafka_security(settings)

    async def main() -> None:
        from ..demo import produce_demo

        await reach_kafka(kafka, security)  # before reading the data, and before a producer is started
        await produce_demo(kafka, limit, security)

    run_until_done(main())


def replay(
    file: Path | None = typer.Argument(
        None, metavar="FILE", help="the events file (cdnow: default the copy shipped in the lifetimes package)"
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        metavar="cdnow|csv|jsonl",
        help="the file's format (default: from its extension: .jsonl or .ndjson, .csv; CDNOW_master.txt is cdnow)",
    ),
    speed: str = typer.Option(
        "max", metavar="max|Nx", help="max, or Nx: N times real time from the first event's time"
    ),
    until: str | None = typer.Option(
        None, metavar="DATE|TIME", help="stop after this event date (YYYY-MM-DD, inclusive) or RFC 3339 time"
    ),
    bootstrap: Bootstrap = None,
) -> None:
    """Backfill: produce a file of historical events into the input topics, in event-time order.

    Run the workers with SEGENGINE_CLOCK=event. Nothing is sent from a file with a bad line
    (exit 1, naming the lines)."""
    from ..replay import ReplayError, ReplayUsageError, file_format, prepare, replay_with_progress

    try:
        format_ = file_format(file, fmt)
    except ReplayUsageError as exc:
        refuse(f"cannot replay: {exc}")
    settings = load_settings(kafka_bootstrap=bootstrap)
    kafka = require_kafka(settings)
    security = kafka_security(settings)
    try:
        records, pace = prepare(file, format_, speed, until)
    except ReplayError as exc:
        refuse(f"cannot replay: {exc}", USAGE if isinstance(exc, ReplayUsageError) else FAILED)

    async def main() -> None:
        await reach_kafka(kafka, security)  # out of reach: one line, without a progress bar before it
        await replay_with_progress(kafka, records, pace, progress_to=console, report_to=out, security=security)

    run_until_done(main())
