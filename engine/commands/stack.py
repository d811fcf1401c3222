"""Commands that run the engine or feed it: run, dev, demo, demo-produce, topics create, replay."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from .common import (
    configure_logging,
    console,
    load_rules_or_exit,
    load_settings,
    out,
    require_kafka,
    run_until_done,
)


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
    """Run one worker on SEGENGINE_KAFKA_BOOTSTRAP and SEGENGINE_REDIS_URL (or, with
    --embedded, a development stack)."""
    settings = load_settings(rules_file=rules, clock=clock, http_port=http_port, embedded=embedded)
    if (missing := settings.missing_connections()) and not settings.embedded:
        console.print(
            f"[red]set {' and '.join(missing)}[/red] "
            "(or run with --embedded / SEGENGINE_EMBEDDED=true for a development stack)",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
        raise typer.Exit(2)
    load_rules_or_exit(settings.rules_file)  # invalid rules: the `rules check` lines, before anything starts
    configure_logging(settings)

    async def main() -> None:
        from ..devstack import stack_for
        from ..worker import Worker

        async with stack_for(settings) as (bootstrap, redis_url):
            worker_settings = settings.model_copy(update={"kafka_bootstrap": bootstrap, "redis_url": redis_url})
            worker = Worker(worker_settings)  # serves the HTTP API while it runs, when http_port is set
            logging.getLogger("segengine").info(
                "worker starting: rules %s, clock %s", worker.rules.version, settings.clock
            )
            await worker.run()

    run_until_done(main())


def dev() -> None:
    """Start the embedded broker and Redis on free loopback ports; keep them up until Ctrl-C."""
    settings = load_settings()
    configure_logging(settings)

    async def main() -> None:
        from ..devstack import stack_for

        async with stack_for(settings) as (bootstrap, redis_url):
            console.print(f"Kafka  [bold]{bootstrap}[/bold]\nRedis  [bold]{redis_url}[/bold]")
            console.print(
                f"export SEGENGINE_KAFKA_BOOTSTRAP={bootstrap} SEGENGINE_REDIS_URL={redis_url}",
                soft_wrap=True,
                highlight=False,
            )
            console.print("Ctrl-C stops both.")
            await asyncio.Event().wait()

    run_until_done(main())


def demo(
    limit: int | None = typer.Option(None, help="replay only the first N events (default: all)"),
) -> None:
    """Replay the CDNOW purchase history (plus synthetic browse/feedback/profile events) through the engine."""
    # a replay moves fast: rank against a fresh population
    settings = load_settings(clock="event", quantiles_refresh_s=10)
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    from ..demo import run_demo

    run_until_done(run_demo(settings, limit=limit))


def demo_produce(limit: int | None = typer.Option(None, help="only the first N events")) -> None:
    """Produce the demo stream (CDNOW + synthetic events) to the configured Kafka, without running a worker."""
    settings = load_settings()
    configure_logging(settings)
    bootstrap = require_kafka(settings)
    from ..demo import produce_demo

    run_until_done(produce_demo(bootstrap, limit))


def topics_create() -> None:
    """Create every topic of topics/topics.yaml that does not exist yet (idempotent)."""
    settings = load_settings()
    configure_logging(settings)
    bootstrap = require_kafka(settings)

    async def create() -> None:
        from ..topics import create_topics, load_topics

        created = await create_topics(bootstrap, load_topics(settings.topics_file))
        console.print(f"created {len(created)} topics: {', '.join(created) or '(all existed)'}")

    run_until_done(create())


def replay(
    file: Path | None = typer.Argument(
        None, help="the events file (cdnow: default the copy shipped in the lifetimes package)"
    ),
    fmt: str = typer.Option(..., "--format", help="cdnow, csv or jsonl"),
    speed: str = typer.Option("max", help="max, or Nx: N times real time from the first event's time"),
    until: str | None = typer.Option(None, help="stop after this event date (YYYY-MM-DD, inclusive) or RFC 3339 time"),
) -> None:
    """Backfill: produce a file of historical events into the input topics in event-time
    order (run workers with SEGENGINE_CLOCK=event)."""
    settings = load_settings()
    configure_logging(settings)
    bootstrap = require_kafka(settings)
    from ..replay import ReplayError, prepare, replay_with_progress

    try:
        records, pace = prepare(file, fmt, speed, until)
    except ReplayError as exc:
        console.print(f"cannot replay: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    run_until_done(replay_with_progress(bootstrap, records, pace, progress_to=console, report_to=out))
