"""The pure-Python predictions (segengine.clv.closed) against scipy's hyp2f1 and the numpy
predictions, to 1e-9 relative, over the parameters and histories seen on CDNOW and around them;
and importing the engine, the fit command or the pure-Python predictions loads no numpy."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.special import hyp2f1 as scipy_hyp2f1

from segengine.clv import bgnbd, closed, gammagamma, value
from segengine.clv.params import BGNBD, GammaGamma

CDNOW_WEEKS = BGNBD(r=0.2426, alpha=4.4136, a=0.7929, b=2.4259)
CDNOW_DAYS = BGNBD(r=0.2671, alpha=41.905, a=0.4835, b=2.1116)  # the full file, daily
SPEND = GammaGamma(p=6.25, q=3.74, gamma=15.44)
TIGHT = 1e-9


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.parametrize("bg", [CDNOW_WEEKS, CDNOW_DAYS])
def test_the_series_equals_scipy_over_the_cdnow_ranges(bg: BGNBD) -> None:
    scale = bg.alpha / CDNOW_WEEKS.alpha  # the horizons and ages in the model's unit
    checked = 0
    for x in (0, 1, 2, 5, 10, 29, 60):
        for age in (0, 1, 7, 27, 39, 78):
            for t in (0.25, 1, 4.345, 13, 26, 39, 52, 104):
                T, horizon = age * scale, t * scale
                z = horizon / (bg.alpha + T + horizon)
                c = bg.a + bg.b + x - 1
                euler = (bg.a + bg.b - 1 - bg.r, bg.a - 1, c, z)  # what the predictions sum
                assert rel(closed.hyp2f1(*euler), float(scipy_hyp2f1(*euler))) < TIGHT, (x, age, t)
                if z <= 0.5:  # the direct form, where its series is short
                    direct = (bg.r + x, bg.b + x, c, z)
                    assert rel(closed.hyp2f1(*direct), float(scipy_hyp2f1(*direct))) < TIGHT, (x, age, t)
                checked += 1
    assert checked == 7 * 6 * 8


def test_the_series_knows_its_limits() -> None:
    assert closed.hyp2f1(1, 1, 2, 0.5) == pytest.approx(-math.log(0.5) / 0.5, rel=1e-15)
    assert closed.hyp2f1(-2, 3, 4, 0.5) == pytest.approx(1 - 2 * 3 / 4 * 0.5 + 3 * 4 / (4 * 5) * 0.25, rel=1e-15)
    assert closed.hyp2f1(0.3, 0.4, 1.5, 0.0) == 1.0
    with pytest.raises(closed.SeriesError, match="0 <= z < 1"):
        closed.hyp2f1(1, 1, 2, 1.0)
    with pytest.raises(closed.SeriesError, match="c = 0, -1"):
        closed.hyp2f1(1, 1, -2, 0.5)
    with pytest.raises(closed.SeriesError, match="did not converge in 5 terms"):
        closed.hyp2f1(1, 1, 2, 0.9, max_terms=5)


def test_the_predictions_equal_the_numpy_ones_for_every_cdnow_customer() -> None:
    import lifetimes.datasets

    df = lifetimes.datasets.load_cdnow_summary_data_with_monetary_value()
    x, t_x, T, m = (df[c].to_numpy(float) for c in ("frequency", "recency", "T", "monetary_value"))
    bg, month = CDNOW_WEEKS, value.periods_per_month(7)
    alive = bgnbd.p_alive(bg, x, t_x, T)
    spend = gammagamma.expected_spend(SPEND, x, m)
    clv = value.clv(bg, SPEND, x, t_x, T, m, month=month)
    horizons = {t: bgnbd.expected_purchases(bg, t, x, t_x, T) for t in (1, 4.345, 39, 52)}
    for i in range(len(x)):
        assert rel(closed.p_alive(bg, x[i], t_x[i], T[i]), alive[i]) < TIGHT
        assert rel(closed.expected_spend(SPEND, x[i], m[i]), spend[i]) < TIGHT
        assert rel(closed.clv(bg, SPEND, x[i], t_x[i], T[i], m[i], month=month), clv[i]) < TIGHT
        for t, expected in horizons.items():
            assert rel(closed.expected_purchases(bg, t, x[i], t_x[i], T[i]), expected[i]) < TIGHT
    assert clv.min() > 0 and clv.max() > 100 * clv.min()


@pytest.mark.parametrize(("a", "b"), [(0.3, 0.5), (0.9, 0.05), (0.5, 0.49)])
def test_a_new_customer_when_a_plus_b_is_below_1(a: float, b: float) -> None:
    """x = 0 and a + b < 1: the Euler-transformed 2F1 turns negative; the expectation does not."""
    bg = BGNBD(r=1.0, alpha=10.0, a=a, b=b)
    for T, t in ((0, 1), (10, 50), (0, 104), (100, 5)):
        z = t / (bg.alpha + T + t)
        direct = (a + b - 1) / (a - 1) * (1 - (1 - z) ** bg.r * float(scipy_hyp2f1(bg.r, b, a + b - 1, z)))
        assert direct > 0
        assert rel(closed.expected_purchases(bg, t, 0, 0, T), direct) < TIGHT
        assert rel(float(bgnbd.expected_purchases(bg, t, [0], [0], [T])[0]), direct) < TIGHT


@settings(max_examples=200, deadline=None)
@given(
    r=st.floats(0.05, 5),
    alpha=st.floats(0.5, 100),
    a=st.floats(0.1, 5).filter(lambda a: abs(a - 1) > 0.05),
    b=st.floats(0.1, 10),
    x=st.integers(0, 60),
    recency=st.floats(0, 1),
    T=st.floats(0, 200),
    t=st.floats(0.1, 104),
)
def test_the_predictions_equal_the_numpy_ones_around_cdnow(
    r: float, alpha: float, a: float, b: float, x: int, recency: float, T: float, t: float
) -> None:
    assume(x > 0 or abs(a + b - 1) > 1e-3)  # 2F1's third parameter a + b + x - 1 at (or next to) its pole 0
    bg = BGNBD(r, alpha, a, b)
    t_x = recency * T if x else 0.0
    ours = closed.expected_purchases(bg, t, x, t_x, T)
    theirs = float(bgnbd.expected_purchases(bg, t, np.array([x]), np.array([t_x]), np.array([T]))[0])
    assert ours >= 0 and rel(ours, theirs) < TIGHT, (ours, theirs)
    assert rel(closed.p_alive(bg, x, t_x, T), float(bgnbd.p_alive(bg, [x], [t_x], [T])[0])) < TIGHT


def test_the_engine_the_fit_command_and_the_closed_forms_load_no_numpy() -> None:
    probe = (
        "import sys, segengine.cli, segengine.commands.fit, segengine.clv, segengine.clv.closed, "
        "segengine.clv.artefact; print([m for m in ('numpy', 'scipy') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"
