"""inspect | segments | tail | produce: look customers up, watch changes, send events
(logic: engine/inspect.py)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from .common import (
    FAILED,
    Bootstrap,
    RedisUrl,
    at_ms,
    console,
    kafka_security,
    load_rules_or_exit,
    load_settings,
    out,
    print_json,
    refuse,
    require_kafka,
    require_redis,
    run_until_done,
)

if TYPE_CHECKING:
    from ..events import Event
    from ..settings import Settings


def inspect_customer(
    customer_id: str = typer.Argument(..., metavar="CUSTOMER_ID", help="the customer (1 to 128 characters)"),
    at: str | None = typer.Option(None, metavar="TIME", help="features at this time (date or RFC 3339; default: now)"),
    as_json: bool = typer.Option(False, "--json", help="JSON output (what GET /customers/{id} returns)"),
    redis_url: RedisUrl = None,
) -> None:
    """A customer's memberships, features, next check time and last changes. Exit 1 if unknown (or erased)."""
    from ..inspect import check_customer_id, customer_report, customer_tables
    from ..store_redis import RedisStore, connect

    settings = load_settings(redis_url=redis_url)
    redis = require_redis(settings)
    if (problem := check_customer_id(customer_id)) is not None:
        refuse(problem)
    rules, now = load_rules_or_exit(settings.rules_file), at_ms(at)

    async def main() -> None:
        client = connect(redis)
        try:
            report = await customer_report(RedisStore(client), rules, customer_id, now)
        finally:
            await client.aclose()
        if report is None:
            refuse("unknown customer (never seen, or erased)", FAILED)
        if as_json:
            print_json(report)
            return
        for table in customer_tables(report):
            out.print(table)

    run_until_done(main())


def segments(
    as_json: bool = typer.Option(False, "--json", help="JSON output (the population part of GET /segments)"),
    redis_url: RedisUrl = None,
) -> None:
    """Customers per dimension and segment: the exact counters the workers keep."""
    from ..inspect import population_table, segments_report
    from ..store_redis import RedisStore, connect

    redis = require_redis(load_settings(redis_url=redis_url))

    async def main() -> None:
        client = connect(redis)
        try:
            report = await segments_report(RedisStore(client))
        finally:
            await client.aclose()
        if as_json:
            print_json(report)
            return
        out.print(population_table(report["population"]))

    run_until_done(main())


def tail(
    dimension: str | None = typer.Option(None, metavar="NAME", help="only changes of this dimension"),
    segment: str | None = typer.Option(None, metavar="NAME", help="only changes from or to this segment"),
    topic: list[str] | None = typer.Option(
        None,
        "--topic",
        "-t",
        metavar="TOPIC",
        help="follow this topic instead (repeatable), e.g. events.dlq: dead letters with their reason",
    ),
    count: int | None = typer.Option(None, "--count", "-c", metavar="N", min=1, help="exit after N records"),
    exit_at_end: bool = typer.Option(
        False, "--exit-at-end", "-e", help="exit once the records there were at the start are shown"
    ),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="start at the oldest record kept, not now"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line, with its topic"),
    bootstrap: Bootstrap = None,
) -> None:
    """Follow segment changes and actions live, one line each, until Ctrl-C.

    segments.changes and actions.* (or the --topic ones); filtered, actions show with the
    change that triggered them."""
    from contextlib import aclosing

    from ..inspect import TailFilter, describe, follow, tail_problem

    settings = load_settings(kafka_bootstrap=bootstrap)
    kafka = require_kafka(settings)
    security = kafka_security(settings)
    if dimension is not None or segment is not None:  # a name the rules do not have would show nothing, silently
        problem = tail_problem(load_rules_or_exit(settings.rules_file), dimension, segment)
        if problem is not None:
            refuse(problem)
    wanted = TailFilter(dimension, segment)

    async def main() -> None:
        shown = 0
        records = follow(kafka, from_beginning=from_beginning, topics=topic, until_end=exit_at_end, security=security)
        async with aclosing(records):
            async for name, record in records:
                if not wanted(name, record):
                    continue
                if as_json:
                    import orjson

                    sys.stdout.write(orjson.dumps({"topic": name, **record}).decode() + "\n")
                    sys.stdout.flush()
                else:
                    out.print(describe(name, record), markup=False, highlight=False, soft_wrap=True)
                shown += 1
                if count is not None and shown >= count:
                    break

    run_until_done(main())


def produce(
    topic: str = typer.Argument(
        ..., metavar="TOPIC", help="an input topic: events.browse, events.purchase, events.feedback, events.profile"
    ),
    event: str = typer.Argument(
        ..., metavar="EVENT", help="the event as JSON, or '-': one event per line from stdin (JSON Lines)"
    ),
    bootstrap: Bootstrap = None,
) -> None:
    """Send hand-written events, each checked first as the engine checks it.

    A rejected event prints its reason code and is not sent. From stdin, every line is
    checked, the good ones are sent, each bad one is named by its line number, and the
    command exits 1 if any was rejected."""
    from ..clock import wall_ms
    from ..events import Rejected
    from ..inspect import check_event, produce_event

    settings = load_settings(kafka_bootstrap=bootstrap)
    if event == "-":
        _produce_lines(settings, topic)
        return
    checked = check_event(
        topic,
        event,
        now_ms=wall_ms(),
        max_bytes=settings.max_event_bytes,
        future_skew_ms=int(settings.future_skew_s * 1000),
    )
    if isinstance(checked, Rejected):
        refuse(f"rejected: {checked.code}: {checked.message}", FAILED)
    kafka = require_kafka(settings)
    security = kafka_security(settings)

    async def main() -> None:
        partition, offset = await produce_event(kafka, checked, security)
        out.print(
            f"sent {checked.type} {checked.event_id} to {topic} partition {partition} offset {offset}",
            markup=False,
            highlight=False,
        )

    run_until_done(main())


def _produce_lines(settings: Settings, topic: str) -> None:
    """``produce TOPIC -``: every line of stdin checked, then the good ones sent in order."""
    from ..clock import wall_ms
    from ..events import Rejected
    from ..inspect import check_event, produce_events

    kafka = require_kafka(settings)
    security = kafka_security(settings)
    now, skew = wall_ms(), int(settings.future_skew_s * 1000)
    good: list[Event] = []
    rejected = 0
    for number, line in enumerate(sys.stdin.buffer, start=1):
        if not line.strip():
            continue
        checked = check_event(
            topic, line.rstrip(b"\r\n"), now_ms=now, max_bytes=settings.max_event_bytes, future_skew_ms=skew
        )
        if isinstance(checked, Rejected):
            rejected += 1
            console.print(f"line {number}: rejected: {checked.code}: {checked.message}", markup=False, highlight=False)
        else:
            good.append(checked)

    async def main() -> None:
        sent = await produce_events(kafka, good, security) if good else 0
        out.print(f"{sent} sent to {topic}, {rejected} rejected", markup=False, highlight=False)

    run_until_done(main())
    if rejected:
        raise typer.Exit(FAILED)
