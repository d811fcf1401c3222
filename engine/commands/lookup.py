"""inspect | segments | tail | produce: look customers up, watch changes, send one event
(logic: engine/inspect.py)."""

from __future__ import annotations

import sys

import typer

from .common import (
    at_ms,
    console,
    load_rules_or_exit,
    load_settings,
    out,
    print_json,
    require_kafka,
    require_redis,
    run_until_done,
)


def inspect_customer(
    customer_id: str,
    at: str | None = typer.Option(None, help="features at this time (default: now)"),
    as_json: bool = typer.Option(False, "--json", help="JSON output (what GET /customers/{id} returns)"),
) -> None:
    """A customer's memberships, features, next check time and last changes. Exit 1 if unknown (or erased)."""
    from ..inspect import check_customer_id, customer_report, customer_tables
    from ..store_redis import RedisStore, connect

    settings = load_settings()
    redis_url = require_redis(settings)
    if (problem := check_customer_id(customer_id)) is not None:
        console.print(f"[red]{problem}[/red]")
        raise typer.Exit(2)
    rules, now = load_rules_or_exit(settings.rules_file), at_ms(at)

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
            print_json(report)
            return
        for table in customer_tables(report):
            out.print(table)

    run_until_done(main())


def segments(
    as_json: bool = typer.Option(False, "--json", help="JSON output (the population part of GET /segments)"),
) -> None:
    """Customers per dimension and segment: the exact counters the workers keep."""
    from ..inspect import population_table, segments_report
    from ..store_redis import RedisStore, connect

    redis_url = require_redis(load_settings())

    async def main() -> None:
        redis = connect(redis_url)
        try:
            report = await segments_report(RedisStore(redis))
        finally:
            await redis.aclose()
        if as_json:
            print_json(report)
            return
        out.print(population_table(report["population"]))

    run_until_done(main())


def tail(
    dimension: str | None = typer.Option(None, help="only changes of this dimension"),
    segment: str | None = typer.Option(None, help="only changes from or to this segment"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="start at the oldest record kept, not now"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line, with its topic"),
) -> None:
    """Follow segment changes and actions live (segments.changes, actions.*) until Ctrl-C;
    filtered, actions show with their change."""
    from ..inspect import TailFilter, describe, follow

    bootstrap = require_kafka(load_settings())
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

    run_until_done(main())


def produce(
    topic: str = typer.Argument(
        ..., help="an input topic: events.browse, events.purchase, events.feedback, events.profile"
    ),
    event: str = typer.Argument(..., help="the event as JSON ('-': read it from stdin)"),
) -> None:
    """Send one hand-written event, checked first as the engine checks it; a rejected one
    prints its reason code and exits 1."""
    from ..clock import wall_ms
    from ..events import Rejected
    from ..inspect import check_event, produce_event

    settings = load_settings()
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
    bootstrap = require_kafka(settings)

    async def main() -> None:
        partition, offset = await produce_event(bootstrap, checked)
        out.print(
            f"sent {checked.type} {checked.event_id} to {topic} partition {partition} offset {offset}",
            markup=False,
            highlight=False,
        )

    run_until_done(main())
