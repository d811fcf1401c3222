"""The demo's live table: the headline dimensions first and in full, everything within the
rows a terminal has, the rest named; the summary counts actions by name."""

from __future__ import annotations

import io

from rich.console import Console

from segengine.demo import HEADLINE, actions_sent, population_table
from segengine.metrics import Metrics


def population() -> dict[str, dict[str, int]]:
    pop = {
        "value_tier": {"A": 120, "B": 900, "C": 8000},
        "lifecycle": {"new": 10, "active": 3000, "at_risk": 2500, "lapsed": 0},
        "loyalty": {"member": 400, "none": 9000},
        "rfm_segment": {f"s{i}": 100 + i for i in range(10)},
    }
    pop.update({f"dim{i:02}": {"x": i + 1, "y": 2 * i + 1, "z": 3, "w": 4} for i in range(20)})
    return pop


def rows_of(rows: int) -> list[list[str]]:
    """The table's body rows, as cells."""
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(population_table(population(), rows))
    body = [line for line in out.getvalue().splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in body]  # (the header row is drawn with ┃)


def test_the_headline_comes_first_in_full_and_the_table_fits() -> None:
    rows = rows_of(32)
    assert len(rows) <= 32
    pop = population()
    headline = [(d, s) for d in HEADLINE for s, n in sorted(pop[d].items(), key=lambda kv: -kv[1]) if n]
    assert [(r[0], r[1]) for r in rows[: len(headline)]] == headline  # every non-empty segment, largest first
    assert rows[len(headline)][0] == "dim00" and rows[len(headline)][1].startswith("w 4, z 3")
    assert rows[-1][0] == "+7 more" and rows[-1][1].startswith("dim13")  # the rest named, not cut off silently
    assert not any("lapsed" in cell for row in rows for cell in row)  # empty segments are not listed


def test_a_small_terminal_still_gets_the_headline_first() -> None:
    rows = rows_of(10)
    assert len(rows) == 10 and rows[0][:2] == ["value_tier", "C"]
    assert rows[-1][0] == "+20 more"  # rfm_segment cut short, the other dimensions named


def test_actions_are_counted_by_name() -> None:
    metrics = Metrics(process=False)
    assert actions_sent(metrics) == "none"
    metrics.action("win_back", "sent", 7)
    metrics.action("vip_care", "sent", 2)
    metrics.action("win_back", "cooled_down", 3)
    assert actions_sent(metrics) == "win_back 7, vip_care 2 (3 held back)"
