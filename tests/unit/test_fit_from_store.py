"""`segengine fit clv` on the live population: the summaries read from folded customer states
are the history file's (lifetimes' definitions), customer for customer, and fitting on them
gives the file's parameters; what the live fit leaves out is counted; the options that do not
apply to Redis are refused in one line, exit 2. Pure: the states are folded in memory and read
through the memory store."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from segengine.clv.calibrate import FitReport, fit_purchases, fit_summary
from segengine.clv.history import read_purchases
from segengine.clv.population import read_population, summarise_states
from segengine.commands.fit import fit_clv
from segengine.datasets import CDNOW_CUSTOMERS, cdnow_path
from segengine.discover import fold_history
from segengine.events import Event, Source
from segengine.folding import apply
from segengine.replay import Format
from segengine.state import DAY_MS, HOUR_MS, CustomerState
from segengine.store_memory import MemoryStore, _Hash

pytest.importorskip("scipy")

CDNOW_END = "1998-06-30"  # the file's last purchase day: the file's fit counts T to it


def relative(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / abs(theirs)


def params(report: FitReport) -> dict[str, float]:
    found = {f"bgnbd.{k}": v for k, v in vars(report.artefact.models.bgnbd).items()}
    assert report.artefact.models.gamma_gamma is not None
    found |= {f"gamma_gamma.{k}": v for k, v in vars(report.artefact.models.gamma_gamma).items()}
    return found


@pytest.fixture(scope="module")
def cdnow_states() -> tuple[dict[str, CustomerState], int]:
    return fold_history(cdnow_path(), "cdnow")


@pytest.mark.parametrize("unit", ["week", "day"])
def test_the_folded_states_give_the_files_summaries_and_fit(
    cdnow_states: tuple[dict[str, CustomerState], int], unit: str
) -> None:
    states, end = cdnow_states
    period = {"week": 7, "day": 1}[unit]
    from_file = fit_purchases(read_purchases(cdnow_path(), Format.cdnow), source="CDNOW_master.txt", time_unit=unit)

    population = summarise_states(states.items(), end, period_days=period)
    assert (population.read, population.no_purchase, population.after_now, population.unknown_value) == (
        CDNOW_CUSTOMERS,
        0,
        0,
        0,
    )
    ours, theirs = population.summary, from_file.summary
    assert ours.customers.tolist() == theirs.customers.tolist()
    assert ours.frequency.tolist() == theirs.frequency.tolist()
    assert ours.recency.tolist() == theirs.recency.tolist()
    assert ours.T.tolist() == theirs.T.tolist()
    # the state rounds the repeat days' total to the cent before taking the mean
    np.testing.assert_allclose(ours.monetary_value, theirs.monetary_value, rtol=1e-12, atol=0)
    assert (ours.first_day, ours.last_day, ours.end_day) == (theirs.first_day, theirs.last_day, theirs.end_day)

    live = fit_summary(ours, source="redis", time_unit=unit)
    want = params(from_file)
    for name, value in params(live).items():
        assert relative(value, want[name]) < 1e-6, (name, value, want[name])
    doc, file_doc = live.artefact.data, from_file.artefact.data
    assert (doc.first_purchase, doc.last_purchase, doc.customers, doc.time_unit) == (
        file_doc.first_purchase,
        file_doc.last_purchase,
        file_doc.customers,
        unit,
    )
    assert doc.first_purchase.isoformat() == "1997-01-01" and doc.last_purchase.isoformat() == CDNOW_END


# -- what the live population's fit leaves out ----------------------------------------------

D0 = 10_000  # a UTC day (1997-05-19)
_offsets = iter(range(10**9))


def bought(customer: str, day: int, amount: float) -> Event:
    offset = next(_offsets)
    ts = (D0 + day) * DAY_MS + 12 * HOUR_MS
    body: dict[str, Any] = {"order_id": f"o{offset}", "amount": amount}
    return Event(f"e{offset}", customer, "purchase", ts, body, Source("events.purchase", 0, offset))


def browsed(customer: str, day: int) -> Event:
    offset = next(_offsets)
    body = {"action": "view", "page": "/"}
    return Event(f"e{offset}", customer, "browse", (D0 + day) * DAY_MS, body, Source("events.browse", 0, offset))


def folded(*events: Event) -> CustomerState:
    state = CustomerState()
    for event in events:
        apply(state, event, dedupe_horizon_ms=7 * DAY_MS)
    return state


def test_the_store_is_read_whole_and_the_left_out_counted() -> None:
    old = folded(bought("old", 0, 10.0), bought("old", 3, 20.0), bought("old", 3, 5.0), bought("old", 9, 40.0))
    unknown = folded(bought("unknown", 1, 10.0), bought("unknown", 4, 30.0))
    unknown.day1_spend = None  # a state from before the first day's spend was kept
    states = {
        "old": old,
        "once": folded(bought("once", 2, 15.0)),
        "browser": folded(browsed("browser", 1)),
        "later": folded(bought("later", 1, 10.0), bought("later", 30, 10.0)),  # after now
        "unknown": unknown,
    }
    store = MemoryStore()
    for customer, state in states.items():
        store.hashes[customer] = _Hash(1, state.dumps())
    store.hashes["erased"] = _Hash(2)  # erased: no state document
    seen: list[int] = []
    now = (D0 + 20) * DAY_MS + 23 * HOUR_MS  # T counts to the day

    population = asyncio.run(read_population(store, now, progress=seen.append))

    assert seen and seen[-1] == 5 == population.read
    assert (population.no_purchase, population.after_now, population.unknown_value) == (1, 1, 1)
    s = population.summary
    assert s.customers.tolist() == ["old", "once", "unknown"]
    assert s.frequency.tolist() == [2, 0, 1]
    assert s.recency.tolist() == [9, 0, 3]
    assert s.T.tolist() == [20, 18, 19]
    assert s.monetary_value[:2].tolist() == [32.5, 0.0] and math.isnan(s.monetary_value[2])
    assert (s.first_day, s.last_day, s.end_day) == (D0, D0 + 9, D0 + 20)

    in_weeks = asyncio.run(read_population(store, now, period_days=7))
    assert in_weeks.summary.T.tolist() == [20 / 7, 18 / 7, 19 / 7]


def test_a_population_without_a_purchase_is_refused_with_the_count_read() -> None:
    with pytest.raises(ValueError, match="among the 1 read: nothing to fit"):
        summarise_states([("browser", folded(browsed("browser", 1)))], (D0 + 5) * DAY_MS)


# -- the command's refusals (before any connection) --------------------------------------------


def run(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    root = typer.Typer()
    fit = typer.Typer()
    fit.command("clv")(fit_clv)
    root.add_typer(fit, name="fit")
    result = CliRunner().invoke(root, ["fit", "clv", *args], env={"COLUMNS": "200", **(env or {})})
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--redis-url", "redis://127.0.0.1:1/0", "--until", "1997-09-30"), "--until does not apply"),
        (("--live", "--until", "1997-09-30"), "no holdout can be split off"),
        (("--live", "--from", str(cdnow_path())), "--from does not apply to the live population"),
        (("--redis-url", "redis://127.0.0.1:1/0", "--format", "cdnow"), "--format does not apply"),
        (("--at", "1998-06-30"), "--at applies to the live population"),
        (("--live", "--at", "yesterday"), "--at 'yesterday' is not a date"),
        (("--live",), "set SEGENGINE_REDIS_URL or give --redis-url"),
    ],
)
def test_what_does_not_apply_to_redis_is_refused_in_one_line(args: tuple[str, ...], said: str) -> None:
    code, stdout, stderr = run(*args, env={"SEGENGINE_REDIS_URL": None})
    assert code == 2, (stdout, stderr)
    assert said in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert stdout == ""


def test_an_unreachable_redis_fails_in_one_line(tmp_path: Any) -> None:
    output = tmp_path / "clv.yaml"
    code, _, stderr = run("--redis-url", "redis://127.0.0.1:1/0", "-o", str(output))
    assert code == 1 and "cannot reach Redis" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not output.exists()
