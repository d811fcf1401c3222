"""fit clv: the BG/NBD and Gamma-Gamma models fitted on a purchase history file, or on the live
population in Redis, written as a versioned model file (logic: engine/clv/).

    segengine fit clv [--from FILE] [--format cdnow|csv|jsonl] [--until DATE] [--time-unit week|day]
                      [--output models/clv.yaml] [--plot FILE.png]
    segengine fit clv --live|--redis-url URL [--at TIME] [--time-unit week|day] [--output models/clv.yaml]

Where the purchases come from: --live or --redis-url selects the live population (the engine's
Redis: --redis-url, else SEGENGINE_REDIS_URL); otherwise the --from file (default: the CDNOW
file shipped in lifetimes). The variable alone never selects Redis, so the file's default stays.
The live fit reads every customer's lifetime purchase summary as the features do
(segengine.clv.population), with T counted to --at's UTC day (default: now; for a replayed
history, the last event's day); --until has no meaning there (the state cannot forget later
purchases) and is refused, as --from, --format and --plot are.

Needs numpy and scipy (``pip install 'segengine[clv]'``); ``--plot`` needs matplotlib too.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .common import (
    FAILED,
    USAGE,
    RedisUrl,
    at_ms,
    console,
    load_settings,
    out,
    refuse,
    require_redis,
    run_until_done,
    say_error,
)

if TYPE_CHECKING:
    from ..clv.calibrate import FitReport
    from ..clv.population import Population

DEFAULT_OUTPUT = Path("models/clv.yaml")


def fit_clv(
    file: Path | None = typer.Option(
        None, "--from", metavar="FILE", help="the purchase history (default: the CDNOW file shipped in lifetimes)"
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        metavar="cdnow|csv|jsonl",
        help="the file's format (default: from its extension: .jsonl or .ndjson, .csv; CDNOW_master.txt is cdnow)",
    ),
    until: str | None = typer.Option(
        None,
        "--until",
        metavar="DATE",
        help="fit on the purchases up to this date (inclusive); the later ones check the predictions",
    ),
    time_unit: str = typer.Option("week", "--time-unit", metavar="week|day", help="the unit of T, recency and alpha"),
    output: Path = typer.Option(DEFAULT_OUTPUT, "--output", "-o", metavar="FILE", help="where to write the model"),
    plot: Path | None = typer.Option(
        None, "--plot", metavar="FILE.png", help="draw the holdout check (with --until; needs matplotlib)"
    ),
    live: bool = typer.Option(
        False, "--live", help="fit on the live population in Redis (--redis-url, else SEGENGINE_REDIS_URL)"
    ),
    redis_url: RedisUrl = None,
    at: str | None = typer.Option(
        None,
        "--at",
        metavar="TIME",
        help="the live population's summaries at this time: T counts to its UTC day (default: now; "
        "for a replayed history give its last event's day)",
    ),
) -> None:
    """Fit the CLV models on a purchase history, or on the live population in Redis (--live or
    --redis-url), and write them as a versioned model file.

    BG/NBD: purchases and dropout; Gamma-Gamma: spend per purchase. With --until, the purchases
    after that date are a holdout: the predicted and actual repeat purchases in it are compared."""
    from ..datasets import DAY_MS
    from ..replay import ReplayUsageError, file_format, parse_until

    if any(importlib.util.find_spec(m) is None for m in ("numpy", "scipy")):
        refuse("segengine fit clv needs numpy and scipy: pip install 'segengine[clv]'")
    if time_unit not in ("week", "day"):
        refuse(f"--time-unit {time_unit!r}: use week or day")
    if live or redis_url is not None:
        for given, option in ((file, "--from"), (fmt, "--format"), (until, "--until"), (plot, "--plot")):
            if given is not None:
                refuse(
                    f"{option} does not apply to the live population (--live or --redis-url): "
                    + (
                        "its summaries hold every purchase, so no holdout can be split off; "
                        "fit a history file with --from and --until for the holdout check"
                        if option in ("--until", "--plot")
                        else "give one source, Redis or a file"
                    )
                )
        _fit_live(redis_url, at_ms(at), time_unit, output)
        return
    if at is not None:
        refuse("--at applies to the live population (--live or --redis-url); a file is fitted to its last purchase")
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        refuse("--plot needs matplotlib: pip install matplotlib")
    if plot is not None and until is None:
        refuse("--plot draws the holdout check: give --until too")
    try:
        fmt_ = file_format(file, fmt if file is not None or fmt is not None else "cdnow")
        end_day = None if until is None else parse_until(until) // DAY_MS
    except ReplayUsageError as exc:
        refuse(f"cannot fit: {exc}")
    path = file if file is not None else _cdnow()
    if not path.is_file():
        refuse(f"{path}: no such file")

    from ..clv import artefact
    from ..clv.calibrate import fit_purchases
    from ..clv.history import read_purchases

    try:
        purchases = read_purchases(path, fmt_)
        report = fit_purchases(purchases, source=path.name, time_unit=time_unit, calibration_end_day=end_day)
    except ValueError as exc:  # ReplayError (the lines at fault), no purchases (before --until), no optimum
        say_error(f"cannot fit: {exc}")
        raise typer.Exit(FAILED) from None
    _show(report, purchases.left_out)
    if until is not None and not report.holdout:
        out.print(f"no purchases after {until}: nothing to check the predictions against", highlight=False)
    try:
        artefact.write(report.artefact, output)
        if plot is not None and report.holdout:
            _plot(report, plot)
    except OSError as exc:
        say_error(f"cannot write {exc.filename or output}: {exc.strerror or exc}")
        raise typer.Exit(FAILED) from None
    out.print(f"model {report.artefact.version} written to {output}", highlight=False, soft_wrap=True)
    if plot is not None and report.holdout:
        out.print(f"holdout check drawn in {plot}", highlight=False, soft_wrap=True)


def _fit_live(redis_url: str | None, now: int, time_unit: str, output: Path) -> None:
    """Read the population's summaries from Redis, fit, show and write (as the file path does)."""
    from datetime import UTC, datetime

    from ..clv import artefact
    from ..clv.artefact import DAYS_IN
    from ..clv.calibrate import fit_summary
    from ..clv.population import read_population
    from ..store_redis import RedisStore, connect

    url = require_redis(load_settings(redis_url=redis_url))
    found: list[Population] = []
    failed: list[str] = []

    async def main() -> None:
        client = connect(url)
        try:
            with console.status("reading the customers") as status:

                def progress(read: int) -> None:
                    status.update(f"reading the customers: {read:,}")

                try:
                    found.append(
                        await read_population(
                            RedisStore(client), now, period_days=DAYS_IN[time_unit], progress=progress
                        )
                    )
                except ValueError as exc:  # nobody with a purchase to fit on
                    failed.append(str(exc))
        finally:
            await client.aclose()

    run_until_done(main())
    if failed:
        say_error(f"cannot fit: {failed[0]}")
        raise typer.Exit(FAILED)
    population = found[0]
    day = datetime.fromtimestamp(now / 1000, UTC).date().isoformat()
    try:
        report = fit_summary(
            population.summary, source=f"redis: {population.read:,} customers at {day}", time_unit=time_unit
        )
    except ValueError as exc:  # no optimum
        say_error(f"cannot fit: {exc}")
        raise typer.Exit(FAILED) from None
    _show(report, 0, live=population)
    try:
        artefact.write(report.artefact, output)
    except OSError as exc:
        say_error(f"cannot write {exc.filename or output}: {exc.strerror or exc}")
        raise typer.Exit(FAILED) from None
    out.print(f"model {report.artefact.version} written to {output}", highlight=False, soft_wrap=True)


def _cdnow() -> Path:
    from ..datasets import cdnow_path

    try:
        return cdnow_path()
    except FileNotFoundError as exc:
        refuse(str(exc), USAGE)


def _show(report: FitReport, left_out: int, *, live: Population | None = None) -> None:
    from dataclasses import asdict

    from rich import box
    from rich.table import Table

    from ..clv.summary import day_date

    s, doc = report.summary, report.artefact
    unit = doc.data.time_unit
    window = f"{doc.data.first_purchase} .. {doc.data.last_purchase}"
    if doc.data.calibration_end is not None:
        window += f", fitted on the purchases up to {doc.data.calibration_end}"
    if live is not None:
        window += f", T counted to {day_date(live.summary.end_day)}"
    out.print(
        f"{len(s):,} customers ({int((s.frequency > 0).sum()):,} with repeat purchases), {window}; "
        f"time unit: {unit}; fitted in {report.seconds:.2f} s"
        + (f"; refunds and unusable purchases left out: {left_out:,}" if left_out else ""),
        highlight=False,
        soft_wrap=True,
    )
    if live is not None:
        _show_left_out(live)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("model")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    bg, gg = report.bgnbd, report.gamma_gamma
    fits = [("BG/NBD", asdict(bg.params), bg.log_likelihood, bg.customers, bg.converged)]
    if gg is not None:
        fits.append(("Gamma-Gamma", asdict(gg.params), gg.log_likelihood, gg.customers, gg.converged))
    for model, values, ll, customers, converged in fits:
        for i, (name, value) in enumerate(values.items()):
            table.add_row(model if i == 0 else "", name, f"{value:.4f}")
        table.add_row("", "log-likelihood", f"{ll:,.2f}")
        table.add_row("", "customers", f"{customers:,}", end_section=converged)
        if not converged:
            table.add_row("", "[yellow]warning[/yellow]", "[yellow]the optimiser did not converge[/yellow]")
            table.add_section()
    out.print(table)
    if report.spend_correlation is not None:
        out.print(
            f"correlation of purchases and mean spend (repeat customers): {report.spend_correlation:.2f} "
            "(Gamma-Gamma assumes none)",
            highlight=False,
        )
    if report.holdout:
        _show_holdout(report)


def _show_left_out(population: Population) -> None:
    """What the live population's fit left out, one line each (nothing when nothing was)."""
    lines = [
        (population.no_purchase, "customers without a purchase left out", ""),
        (
            population.after_now,
            "customers with a purchase after the day fitted at left out",
            " (their summaries hold it: give a later --at)",
        ),
        (
            population.unknown_value,
            "customers whose repeat purchases' value the state does not know",
            " left out of the Gamma-Gamma fit",
        ),
    ]
    for count, what, why in lines:
        if count:
            out.print(f"{count:,} {what}{why}", highlight=False, soft_wrap=True)


def _show_holdout(report: FitReport) -> None:
    from rich import box
    from rich.table import Table

    unit = report.artefact.data.time_unit
    table = Table(
        title=f"holdout: {report.holdout_length:g} {unit}s after the calibration",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for name in ("repeat purchases in calibration", "customers", "actual (mean)", "predicted (mean)"):
        table.add_column(name, justify="right")
    for row in report.holdout:
        table.add_row(row.group, f"{row.customers:,}", f"{row.actual:.3f}", f"{row.predicted:.3f}")
    out.print(table)
    out.print(
        f"repeat purchases in the holdout: actual {report.holdout_actual:,.0f}, "
        f"predicted {report.holdout_predicted:,.1f}",
        highlight=False,
    )


def _plot(report: FitReport, path: Path) -> None:
    """The holdout table as a chart (matplotlib, loaded only here: it is not a dependency)."""
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    groups = [row.group for row in report.holdout]
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    axes.plot(groups, [row.actual for row in report.holdout], marker="o", label="actual")
    axes.plot(groups, [row.predicted for row in report.holdout], marker="s", linestyle="--", label="BG/NBD")
    axes.set_xlabel("repeat purchases in the calibration period")
    axes.set_ylabel(
        f"mean repeat purchases in the holdout ({report.holdout_length:g} {report.artefact.data.time_unit}s)"
    )
    axes.set_title("Conditional expectations: predicted vs actual")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
