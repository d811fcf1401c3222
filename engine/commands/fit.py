"""fit clv: the BG/NBD and Gamma-Gamma models fitted on a purchase history file, written as a
versioned model file (logic: engine/clv/).

    segengine fit clv [--from FILE] [--format cdnow|csv|jsonl] [--until DATE] [--time-unit week|day]
                      [--output models/clv.yaml] [--plot FILE.png]

Needs numpy and scipy (``pip install 'segengine[clv]'``); ``--plot`` needs matplotlib too.
Fitting from the live population in Redis (the customers' summaries as the engine holds them,
rather than a history file) is a later step: the fit would then read the summaries through the
store, and this command would take --redis-url like the other commands that read Redis.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .common import FAILED, USAGE, out, refuse, say_error

if TYPE_CHECKING:
    from ..clv.calibrate import FitReport

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
) -> None:
    """Fit the CLV models on a purchase history and write them as a versioned model file.

    BG/NBD: purchases and dropout; Gamma-Gamma: spend per purchase. With --until, the purchases
    after that date are a holdout: the predicted and actual repeat purchases in it are compared."""
    from ..datasets import DAY_MS
    from ..replay import ReplayUsageError, file_format, parse_until

    if any(importlib.util.find_spec(m) is None for m in ("numpy", "scipy")):
        refuse("segengine fit clv needs numpy and scipy: pip install 'segengine[clv]'")
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        refuse("--plot needs matplotlib: pip install matplotlib")
    if plot is not None and until is None:
        refuse("--plot draws the holdout check: give --until too")
    if time_unit not in ("week", "day"):
        refuse(f"--time-unit {time_unit!r}: use week or day")
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


def _cdnow() -> Path:
    from ..datasets import cdnow_path

    try:
        return cdnow_path()
    except FileNotFoundError as exc:
        refuse(str(exc), USAGE)


def _show(report: FitReport, left_out: int) -> None:
    from dataclasses import asdict

    from rich import box
    from rich.table import Table

    s, doc = report.summary, report.artefact
    unit = doc.data.time_unit
    window = f"{doc.data.first_purchase} .. {doc.data.last_purchase}"
    if doc.data.calibration_end is not None:
        window += f", fitted on the purchases up to {doc.data.calibration_end}"
    out.print(
        f"{len(s):,} customers ({int((s.frequency > 0).sum()):,} with repeat purchases), {window}; "
        f"time unit: {unit}; fitted in {report.seconds:.2f} s"
        + (f"; refunds and unusable purchases left out: {left_out:,}" if left_out else ""),
        highlight=False,
        soft_wrap=True,
    )
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
