"""rules check | explain | simulate: rules tooling for marketers (logic: engine/rules/tools.py)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import at_ms, console, load_rules_or_exit, load_settings, out, require_redis, run_until_done

if TYPE_CHECKING:
    from ..rules import RuleSet


def rules_check(
    path: Path | None = typer.Argument(
        None, help="a rules file or a folder of rule packs (default: SEGENGINE_RULES_FILE, else the shipped packs)"
    ),
) -> None:
    """Exit 1 with file:line:column: message for every error; 0 when the rules are valid."""
    rules = load_rules_or_exit(path if path is not None else load_settings().rules_file)
    dims = ", ".join(f"{d.name} ({len(d.segments) + (d.default is not None)})" for d in rules.dimensions)
    out.print(f"ok: {rules.version}: {len(rules.dimensions)} dimensions: {dims}", highlight=False)


def rules_explain(
    customer_id: str,
    rules_path: Path | None = typer.Option(None, "--rules", help="rules (default: SEGENGINE_RULES_FILE)"),
    at: str | None = typer.Option(None, help="evaluate at this time (default: now)"),
    as_json: bool = typer.Option(False, "--json", help="JSON output for scripts"),
) -> None:
    """A customer's features, and for each dimension the segment, the rule that matched and the values it read."""
    settings = load_settings(rules_file=rules_path)
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


Moves = dict[str, Counter[tuple[str | None, str | None]]]


def rules_simulate(
    new_rules: Path = typer.Argument(..., help="the rules file or folder to preview"),
    at: str | None = typer.Option(None, help="evaluate at this time (default: now)"),
    sample: int | None = typer.Option(None, help="only the first N customers found"),
    as_json: bool = typer.Option(False, "--json", help="JSON output for scripts"),
) -> None:
    """Who would move if NEW_RULES went live: per dimension, a from -> to matrix. Emits nothing."""
    settings = load_settings()
    redis_url = require_redis(settings)
    rules = load_rules_or_exit(new_rules)
    now = at_ms(at)

    async def main() -> None:
        from rich.progress import Progress

        from ..rules.tools import simulate
        from ..state import CustomerState
        from ..store_redis import RedisStore, connect

        redis = connect(redis_url)
        store = RedisStore(redis)
        totals: Moves = {}
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
                "[yellow]note:[/yellow] aggregations new or changed in this file have no history yet: "
                f"{', '.join(fresh)}; customers are previewed as if they were empty "
                "(they fill from the switch on; replay history to backfill)"
            )
        _print_moves(rules, seen, totals, as_json)

    run_until_done(main())


def _print_moves(rules: RuleSet, seen: int, totals: Moves, as_json: bool) -> None:
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
