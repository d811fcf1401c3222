"""export: the members of one segment as CSV or JSON Lines, for tools that do not read Kafka
(logic: engine/audience.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import typer

from .common import (
    RedisUrl,
    RulesPath,
    console,
    load_rules_or_exit,
    load_settings,
    out,
    refuse,
    require_redis,
    run_until_done,
)

if TYPE_CHECKING:
    from ..audience import AudienceWriter
    from ..store import Store


def export(
    dimension: str = typer.Option(..., "--dimension", metavar="DIMENSION", help="the dimension, e.g. value_tier"),
    segment: str = typer.Option(..., "--segment", metavar="SEGMENT", help="a segment of that dimension, e.g. A"),
    fmt: str | None = typer.Option(
        None, "--format", metavar="csv|jsonl", help="the format (default: from the output file's extension, else jsonl)"
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", metavar="FILE", help="write to this file (default: stdout)"
    ),
    redis_url: RedisUrl = None,
    rules_path: RulesPath = None,
) -> None:
    """Every customer now in a segment: customer_id, dimension, segment, member_since. A full scan
    of the customers in Redis, in bounded steps; the file appears whole when the export is done."""
    from ..audience import FORMATS, audience_problem, infer_format

    settings = load_settings(redis_url=redis_url, rules_file=rules_path)
    redis = require_redis(settings)
    if fmt is not None and fmt not in FORMATS:
        refuse(f"unknown format {fmt!r}: use {' or '.join(FORMATS)}")
    rules = load_rules_or_exit(settings.rules_file)
    if (problem := audience_problem(rules, dimension, segment)) is not None:
        refuse(problem)
    chosen = infer_format(fmt, output)

    async def main() -> None:
        from ..store_redis import RedisStore, connect

        # A bar on the terminal, unless the rows go to that same terminal.
        shown = console.is_terminal and (output is not None or not sys.stdout.isatty())
        client = connect(redis)
        try:
            await client.ping()  # out of reach: one line and exit 1 before anything is written
            store = RedisStore(client)
            if output is None:
                rows = await _export(store, dimension, segment, sys.stdout, chosen, shown)
                sys.stdout.flush()
            else:
                rows = await _export_to_file(store, dimension, segment, output, chosen, shown)
        finally:
            await client.aclose()
        if output is not None:
            out.print(
                f"{rows:,} customers of {dimension}={segment} written to {output}", highlight=False, soft_wrap=True
            )

    run_until_done(main())


async def _export_to_file(store: Store, dimension: str, segment: str, output: Path, fmt: str, shown: bool) -> int:
    """Write beside ``output`` and rename once done: a reader never sees half an audience, and a
    failed export leaves the previous file as it was. (A pipe or a device is written directly.)"""
    if output.exists() and not output.is_file():
        with output.open("w", encoding="utf-8", newline="") as stream:
            return await _export(store, dimension, segment, stream, fmt, shown)
    partial = output.with_name(f".{output.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as stream:
            rows = await _export(store, dimension, segment, stream, fmt, shown)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return rows


async def _export(store: Store, dimension: str, segment: str, stream: TextIO, fmt: str, shown: bool) -> int:
    """Scan and write; with ``shown``, a progress bar on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..audience import AudienceWriter

    writer = AudienceWriter(stream, fmt)
    if not shown:
        await _copy(store, dimension, segment, writer)
        return writer.rows
    expected = (await store.population()).get(dimension, {}).get(segment)  # the exact counter: the bar's end
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    scanned_column = TextColumn("{task.fields[scanned]:,} customers read")
    with Progress(
        *columns, scanned_column, console=console, transient=True, redirect_stdout=False, redirect_stderr=False
    ) as progress:
        task = progress.add_task(f"{dimension}={segment}", total=expected, scanned=0)

        def advance(scanned: int) -> None:
            progress.update(task, completed=writer.rows, scanned=scanned)

        await _copy(store, dimension, segment, writer, advance)
    return writer.rows


async def _copy(
    store: Store, dimension: str, segment: str, writer: AudienceWriter, advance: Callable[[int], None] | None = None
) -> None:
    from ..audience import scan_members

    scanned = 0
    async for step in scan_members(store, dimension, segment):
        writer.write(step.members)
        scanned += step.customers
        if advance is not None:
            advance(scanned)
