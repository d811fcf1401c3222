"""discover: k-means clusters of the population's features, written as a rules pack (logic:
engine/discover.py).

    segengine discover --features F1,F2,... [--k K|auto] [--from FILE [--format cdnow|csv|jsonl]]
                       [--at TIME] [--name NAME] [--output FILE] [--seed N] [--plot FILE.png]
                       [--redis-url URL]

Needs scikit-learn and numpy (``pip install 'segengine[discover]'``); ``--plot`` needs
matplotlib too. Without --from, the population is the engine's, read from Redis.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .common import (
    FAILED,
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
    from ..discover import Clustering, Rows

DEFAULT_OUTPUT = Path("discovered.yaml")


def discover(
    features: str = typer.Option(
        ..., "--features", metavar="F1,F2,...", help="the built-in features to cluster on, comma-separated"
    ),
    k: str = typer.Option("auto", "--k", metavar="K|auto", help="clusters to find; auto: the best silhouette, 2..8"),
    file: Path | None = typer.Option(
        None, "--from", metavar="FILE", help="a history file, folded as the engine folds it (default: Redis)"
    ),
    fmt: str | None = typer.Option(
        None, "--format", metavar="cdnow|csv|jsonl", help="the file's format (default: from its extension)"
    ),
    at: str | None = typer.Option(
        None, metavar="TIME", help="features at this time (default: the file's last event, or now for Redis)"
    ),
    name: str = typer.Option("discovered", "--name", metavar="NAME", help="the pack's dimension (and its name)"),
    output: Path = typer.Option(DEFAULT_OUTPUT, "--output", "-o", metavar="FILE", help="where to write the pack"),
    seed: int = typer.Option(0, "--seed", metavar="N", help="k-means' random seed"),
    plot: Path | None = typer.Option(
        None, "--plot", metavar="FILE.png", help="draw the clusters, feature against feature (needs matplotlib)"
    ),
    redis_url: RedisUrl = None,
) -> None:
    """Find segments in the population: k-means on standardised features, and a rules pack
    whose dimension puts every customer in its nearest cluster, on every event and, when a
    clustered feature moves with time (days_since_last_purchase), by a timer at the moment
    another centroid becomes the nearest.

    Prints each cluster's size and feature means; customers with a null feature are in no
    cluster (the dimension's default, unclustered)."""
    from ..discover import AUTO_K, MAX_K, unknown_features
    from ..rules.names import did_you_mean
    from ..rules.schema import NAME
    from ..state import FEATURES

    if any(importlib.util.find_spec(m) is None for m in ("numpy", "sklearn")):
        refuse("segengine discover needs scikit-learn and numpy: pip install 'segengine[discover]'")
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        refuse("--plot needs matplotlib: pip install matplotlib")
    names = [f.strip() for f in features.split(",") if f.strip()]
    if not names:
        refuse("--features: name at least one feature, e.g. orders_total,spend_total")
    if len(set(names)) != len(names):
        refuse("--features: a feature is named twice")
    for unknown in unknown_features(names):
        refuse(f"--features: unknown feature {unknown!r}{did_you_mean(unknown, FEATURES)}")
    if k != "auto" and not (k.isdigit() and 2 <= int(k) <= MAX_K):
        refuse(f"--k {k!r}: give a whole number from 2 to {MAX_K}, or auto")
    if not NAME.match(name):
        refuse(f"--name {name!r} is not an identifier")

    if file is not None:
        rows = _rows_from_file(file, fmt, names, at)
        source = file.name
    else:
        if fmt is not None:
            refuse("--format describes the --from file: give --from too")
        rows = _rows_from_redis(redis_url, names, at_ms(at))
        source = "the live population"
    if rows.left_out:
        out.print(f"{rows.left_out:,} customers with a null feature left out (in no cluster)", highlight=False)

    from ..discover import DiscoverError, choose_k, cluster, disagreements, pack_text

    try:
        scores = None
        if k == "auto":
            with console.status("choosing k by silhouette"):
                scores = choose_k(rows.values, seed, AUTO_K)
            chosen = max(scores, key=lambda n: (scores[n], -n))
        else:
            chosen = int(k)
        with console.status(f"k-means, k = {chosen}"):
            found = cluster(rows, chosen, seed)
    except DiscoverError as exc:
        say_error(f"cannot cluster: {exc}")
        raise typer.Exit(FAILED) from None
    if scores is not None:
        _show_silhouettes(scores, chosen)
    _show(found, rows)

    text = pack_text(found, name=name, source=source, when=rows.now)
    from ..rules import check_rules

    rules, problems = check_rules(text, str(output), folder=output.parent)
    if rules is None:  # a defect: the pack written must compile
        say_error(f"the pack does not compile: {problems[0]}")
        raise typer.Exit(FAILED)
    wrong = disagreements(rules, found, rows, name)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        if plot is not None:
            _plot(found, rows, plot)
    except OSError as exc:
        say_error(f"cannot write {exc.filename or output}: {exc.strerror or exc}")
        raise typer.Exit(FAILED) from None
    agree = len(rows.values) - wrong
    out.print(
        f"rules {rules.version} written to {output}: its dimension {name!r} places {agree:,} of "
        f"{len(rows.values):,} customers in the cluster k-means found",
        highlight=False,
        soft_wrap=True,
    )
    if plot is not None:
        out.print(f"clusters drawn in {plot}", highlight=False, soft_wrap=True)
    if rules.time_plan.clusters:
        out.print(
            "time alone re-assigns a customer: a timer fires at the moment another centroid becomes the nearest",
            highlight=False,
            soft_wrap=True,
        )
    if wrong:
        say_error(f"{wrong:,} customers are placed differently by the pack (rounding at a cluster boundary)")
        raise typer.Exit(FAILED)


def _rows_from_file(file: Path, fmt: str | None, names: list[str], at: str | None) -> Rows:
    from ..discover import feature_rows, fold_history
    from ..replay import ReplayError, ReplayUsageError, file_format

    try:
        fmt_ = file_format(file, fmt)
    except ReplayUsageError as exc:
        refuse(f"cannot discover: {exc}")
    if not file.is_file():
        refuse(f"{file}: no such file")
    try:
        with console.status(f"folding {file.name}"):
            states, end = fold_history(file, fmt_)
    except ReplayError as exc:
        say_error(f"cannot read {file.name}: {exc}")
        raise typer.Exit(FAILED) from None
    if not states:
        say_error(f"{file.name}: no customers")
        raise typer.Exit(FAILED)
    return feature_rows(states, names, at_ms(at) if at is not None else end)


def _rows_from_redis(redis_url: str | None, names: list[str], now: int) -> Rows:
    from ..discover import store_rows
    from ..store_redis import RedisStore, connect

    url = require_redis(load_settings(redis_url=redis_url))
    found: list[Rows] = []

    async def main() -> None:
        client = connect(url)
        try:
            with console.status("reading the customers"):
                found.append(await store_rows(RedisStore(client), names, now))
        finally:
            await client.aclose()

    run_until_done(main())
    if not found[0].values:
        refuse("no customer in Redis has every feature: nothing to cluster", FAILED)
    return found[0]


def _show_silhouettes(scores: dict[int, float], chosen: int) -> None:
    line = ", ".join(f"{k}: {s:.3f}" for k, s in scores.items())
    out.print(f"silhouette by k (on a sample): {line}; k = {chosen}", highlight=False, soft_wrap=True)


def _show(found: Clustering, rows: Rows) -> None:
    from datetime import UTC, datetime

    from rich import box
    from rich.table import Table

    when = datetime.fromtimestamp(rows.now / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = Table(
        title=f"{found.k} clusters of {len(rows.values):,} customers at {when} (feature means)",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("segment")
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    for feature in found.features:
        table.add_column(feature, justify="right")
    total = sum(c.size for c in found.clusters) or 1
    for i, c in enumerate(found.clusters):
        table.add_row(f"cluster_{i}", f"{c.size:,}", f"{c.size / total:.1%}", *(f"{m:,.2f}" for m in c.means))
    table.add_row("all", f"{total:,}", "100.0%", *(f"{m:,.2f}" for m in found.mean), style="dim", end_section=True)
    out.print(table)


def _plot(found: Clustering, rows: Rows, path: Path) -> None:
    """Each pair of features (the first four) as a scatter, coloured by cluster, centroids
    marked (matplotlib, loaded only here: it is not a dependency)."""
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    shown = found.features[:4]
    pairs = [(a, b) for a in range(len(shown)) for b in range(a + 1, len(shown))] or [(0, 0)]
    figure, axes = pyplot.subplots(1, len(pairs), figsize=(4.5 * len(pairs), 4.2), squeeze=False)
    for panel, (a, b) in zip(axes[0], pairs):
        for i, c in enumerate(found.clusters):
            members = [v for v, label in zip(rows.values, found.labels) if label == i]
            panel.scatter([v[a] for v in members], [v[b] for v in members], s=4, alpha=0.4, label=f"cluster_{i}")
            centre = [found.mean[j] + found.scale[j] * c.centroid[j] for j in (a, b)]
            panel.scatter([centre[0]], [centre[1]], marker="X", s=90, color="black")
        panel.set_xlabel(shown[a])
        panel.set_ylabel(shown[b])
    axes[0][0].legend(markerscale=3)
    figure.suptitle(f"{found.k} clusters (k-means on standardised values; X: centroids)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
