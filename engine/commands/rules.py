"""rules check | explain | simulate: rules tooling for marketers (logic: engine/rules/tools.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import (
    RedisUrl,
    RulesPath,
    at_ms,
    console,
    env_help,
    load_rules_or_exit,
    load_settings,
    out,
    require_redis,
    run_until_done,
)

if TYPE_CHECKING:
    from ..rules.preview import Preview


def rules_check(
    path: Path | None = typer.Argument(
        None,
        metavar="PATH",
        help=env_help("a rules file or a folder of rule packs (default: the shipped packs)", "rules_file"),
    ),
) -> None:
    """Exit 1 with file:line:column: message for every error; 0 when the rules are valid."""
    rules = load_rules_or_exit(path if path is not None else load_settings().rules_file)
    dims = ", ".join(f"{d.name} ({len(d.segments) + (d.default is not None)})" for d in rules.dimensions)
    out.print(f"ok: {rules.version}: {len(rules.dimensions)} dimensions: {dims}", highlight=False)
    if rules.model is not None:
        out.print(f"predictions from the CLV model {rules.model.describe()}", highlight=False, soft_wrap=True)


def rules_explain(
    customer_id: str = typer.Argument(..., metavar="CUSTOMER_ID", help="the customer"),
    rules_path: RulesPath = None,
    at: str | None = typer.Option(None, metavar="TIME", help="evaluate at this time (date or RFC 3339; default: now)"),
    as_json: bool = typer.Option(False, "--json", help="JSON output for scripts"),
    redis_url: RedisUrl = None,
) -> None:
    """A customer's features, and for each dimension the segment, the rule that matched and the values it read."""
    settings = load_settings(rules_file=rules_path, redis_url=redis_url)
    redis_url = require_redis(settings)
    rules = load_rules_or_exit(settings.rules_file)

    async def main() -> None:
        from ..rules.tools import explain
        from ..state import CustomerState
        from ..store_redis import RedisStore, connect

        redis = connect(redis_url)
        try:
            loaded = await RedisStore(redis).load_state(customer_id)
        finally:
            await redis.aclose()
        if loaded.blob is None:
            console.print(f"[red]no state for customer {customer_id!r}[/red]")
            raise typer.Exit(1)
        report = explain(rules, CustomerState.loads(loaded.blob), at_ms(at))
        if as_json:
            import orjson

            sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            _print_explanation(customer_id, report)

    run_until_done(main())


def _print_explanation(customer_id: str, report: dict[str, Any]) -> None:
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


def rules_simulate(
    new_rules: Path = typer.Argument(..., metavar="NEW_RULES", help="the rules file or folder to preview"),
    rules_path: RulesPath = None,
    at: str | None = typer.Option(None, metavar="TIME", help="evaluate at this time (date or RFC 3339; default: now)"),
    sample: int | None = typer.Option(None, metavar="N", help="only the first N customers found"),
    as_json: bool = typer.Option(False, "--json", help="JSON output for scripts"),
    redis_url: RedisUrl = None,
) -> None:
    """Who would move if NEW_RULES replaced the rules in force (--rules): per dimension, from -> to
    with counts, both decided at the same time against the same population. Emits nothing."""
    settings = load_settings(rules_file=rules_path, redis_url=redis_url)
    url = require_redis(settings)
    rules = load_rules_or_exit(new_rules)
    baseline = load_rules_or_exit(settings.rules_file)
    now = at_ms(at)

    async def main() -> None:
        from rich.progress import Progress

        from ..rules.preview import preview
        from ..store_redis import RedisStore, connect

        redis = connect(url)
        try:
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("evaluating customers", total=None)
                result = await preview(
                    RedisStore(redis),
                    rules,
                    baseline,
                    now,
                    limit=sample,
                    sample_size=settings.quantiles_sample,
                    progress=lambda seen: progress.update(task, completed=seen),
                )
        finally:
            await redis.aclose()
        if as_json:
            sys.stdout.write(_json_line(result.report()))
        else:
            _print_notes(result)
            _print_moves(result)

    run_until_done(main())


def _json_line(value: object) -> str:
    import orjson

    return orjson.dumps(value).decode() + "\n"


def _print_notes(result: Preview) -> None:
    """What the counts rest on, on stderr: each note only when it applies."""
    from rich.markup import escape

    notes = []
    if result.new_aggregates and result.customers:
        notes.append(
            f"aggregations new or changed in this file have no history yet: {', '.join(result.new_aggregates)}; "
            "customers are previewed as if they were empty (they fill from the switch on; replay history to backfill)"
        )
    if result.sampled_now:
        notes.append(
            f"not in the workers' population sample (new or redefined here): {', '.join(result.sampled_now)}; "
            "ranked against a sample taken now, as a worker will take one"
        )
    if result.held_back:
        sizes = ", ".join(f"{f} ({n:,})" for f, n in result.held_back.items())
        notes.append(
            f"population samples under min_sample {result.min_sample:,}: {sizes}; "
            "their quantile_score / pct_rank stay null"
        )
    if result.removed:
        notes.append(f"dimensions not in the new rules keep their memberships: {', '.join(result.removed)}")
    if result.skipped:
        notes.append(f"{result.skipped:,} customers could not be read and were left out")
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)


def _print_moves(result: Preview) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from ..evaluate import rfc3339
    from ..rules.preview import ordered

    out.print(
        f"{result.customers:,} customers decided at {rfc3339(result.now)} by the rules in force "
        f"({result.baseline_version}) and by {result.rules_version}; nothing was emitted",
        highlight=False,
    )
    for dim in result.dimensions:
        counts = result.moves.get(dim)
        if not counts:
            continue
        out.print(f"\n{escape(dim)}: {sum(counts.values()):,} would move", highlight=False)
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("from")
        table.add_column("to")
        table.add_column("customers", justify="right")
        for (a, b), n in ordered(counts):
            table.add_row("(none)" if a is None else escape(a), "(none)" if b is None else escape(b), f"{n:,}")
        out.print(table)
    unchanged = result.unchanged
    if len(unchanged) == len(result.dimensions):
        out.print("nobody would move", highlight=False)
    elif unchanged:
        out.print(f"\nno moves in {len(unchanged)} dimensions: {escape(', '.join(unchanged))}", highlight=False)
