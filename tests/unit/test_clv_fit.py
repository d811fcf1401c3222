"""The CLV models against the literature and against lifetimes, on the CDNOW 1/10 sample
(2,357 customers, 39-week calibration ending 1997-09-30) that ships with lifetimes.

- BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"):
  r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4, printed to 3 decimals (LL to 1).
- Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie 2013, "The Gamma-Gamma
  model of monetary value"): p = 6.25, q = 3.74, gamma = 15.44, printed to 2 decimals. The
  shipped summary rounds each customer's mean spend to the cent; on it the optimum is
  gamma = 15.448 (lifetimes finds the same), 0.008 from the printed value. The mean spends
  computed from the transactions themselves give 15.4435: the printed value to its precision.
- Every prediction equals lifetimes' own, with the same parameters, to 1e-6 relative (it is
  ~1e-12); the summary builder equals ``summary_data_from_transaction_data``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import lifetimes.datasets
import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import calibration_and_holdout_data, summary_data_from_transaction_data

from segengine.clv import bgnbd, gammagamma, value
from segengine.clv.bgnbd import BGNBDFit
from segengine.clv.gammagamma import GammaGammaFit
from segengine.clv.history import read_purchases
from segengine.clv.params import BGNBD, GammaGamma
from segengine.clv.summary import Summary, day_number, holdout_purchases, summarise
from segengine.replay import Format

DATA = Path(lifetimes.datasets.__file__).parent
CALIBRATION_END = date(1997, 9, 30)
HORIZONS = (0.5, 1, 4.345, 13, 39, 52, 104)  # weeks
AGREE = 1e-6


def relative(ours: object, theirs: object) -> float:
    a, b = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


@pytest.fixture(scope="module")
def shipped() -> pd.DataFrame:
    """The literature's calibration summary: frequency, recency, T (weeks), mean spend (zbar)."""
    df = pd.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")
    return df.rename(columns={"x": "frequency", "t_x": "recency", "zbar": "monetary_value"})


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    """CDNOW_sample.txt's transactions: customer, date, amount."""
    df = pd.read_csv(
        DATA / "CDNOW_sample.txt", sep=r"\s+", header=None, names=["cdnow_id", "id", "date", "cds", "amount"]
    )
    df["customer"] = df["id"].map(lambda i: f"{i:04d}")
    df["date"] = pd.to_datetime(df["date"].astype(str), format="%Y%m%d")
    return df


def days_of(df: pd.DataFrame) -> np.ndarray:
    return np.array([day_number(d.date()) for d in df["date"]])


@pytest.fixture(scope="module")
def calibration(sample: pd.DataFrame) -> Summary:
    return summarise(
        sample["customer"], days_of(sample), sample["amount"], end_day=day_number(CALIBRATION_END), period_days=7
    )


@pytest.fixture(scope="module")
def bg_fit(shipped: pd.DataFrame) -> BGNBDFit:
    return bgnbd.fit(shipped["frequency"], shipped["recency"], shipped["T"])


@pytest.fixture(scope="module")
def gg_fit(shipped: pd.DataFrame) -> GammaGammaFit:
    repeat = shipped[shipped["frequency"] > 0]
    return gammagamma.fit(repeat["frequency"], repeat["monetary_value"])


# -- the literature ------------------------------------------------------------------------------


def test_bgnbd_on_the_cdnow_calibration_summary_gives_the_published_estimates(bg_fit: BGNBDFit) -> None:
    p = bg_fit.params
    assert (round(p.r, 3), round(p.alpha, 3), round(p.a, 3), round(p.b, 3)) == (0.243, 4.414, 0.793, 2.426)
    assert round(bg_fit.log_likelihood, 1) == -9582.4
    assert bg_fit.customers == 2357 and bg_fit.converged


def test_gamma_gamma_on_the_repeat_customers_gives_the_published_estimates(
    gg_fit: GammaGammaFit, calibration: Summary
) -> None:
    p = gg_fit.params
    assert gg_fit.customers == 946 and gg_fit.converged
    assert (round(p.p, 2), round(p.q, 2)) == (6.25, 3.74)
    assert abs(p.gamma - 15.44) < 0.01  # mean spends rounded to the cent in the shipped file: 15.448
    # from the transactions, the mean spends unrounded: the printed values, to their precision
    exact = gammagamma.fit(calibration.frequency, calibration.monetary_value)
    assert exact.customers == 946
    assert (round(exact.params.p, 2), round(exact.params.q, 2), round(exact.params.gamma, 2)) == (6.25, 3.74, 15.44)


def test_bgnbd_from_the_transactions_gives_the_published_estimates(calibration: Summary) -> None:
    fit = bgnbd.fit(calibration.frequency, calibration.recency, calibration.T)
    p = fit.params
    assert (round(p.r, 3), round(p.alpha, 3), round(p.a, 3), round(p.b, 3)) == (0.243, 4.414, 0.793, 2.426)
    assert round(fit.log_likelihood, 1) == -9582.4


def test_our_optimum_is_at_least_as_high_as_lifetimes_and_flat(
    shipped: pd.DataFrame, bg_fit: BGNBDFit, gg_fit: GammaGammaFit
) -> None:
    theirs = BetaGeoFitter().fit(shipped["frequency"], shipped["recency"], shipped["T"])
    r, alpha, a, b = (float(theirs.params_[k]) for k in ("r", "alpha", "a", "b"))
    at_theirs = bgnbd.log_likelihood(BGNBD(r, alpha, a, b), shipped["frequency"], shipped["recency"], shipped["T"])
    assert bg_fit.log_likelihood >= at_theirs.sum() - 1e-9
    assert relative([bg_fit.params.r, bg_fit.params.alpha, bg_fit.params.a, bg_fit.params.b], [r, alpha, a, b]) < 1e-4

    repeat = shipped[shipped["frequency"] > 0]
    gg_theirs = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
    p, q, v = (float(gg_theirs.params_[k]) for k in ("p", "q", "v"))
    at_gg = gammagamma.log_likelihood(GammaGamma(p, q, v), repeat["frequency"], repeat["monetary_value"])
    assert gg_fit.log_likelihood >= at_gg.sum() - 1e-9
    assert relative([gg_fit.params.p, gg_fit.params.q, gg_fit.params.gamma], [p, q, v]) < 1e-4


def test_the_analytic_gradients_match_finite_differences(shipped: pd.DataFrame) -> None:
    x, t_x, T, m = (shipped[c].to_numpy(float) for c in ("frequency", "recency", "T", "monetary_value"))
    theta = np.log([0.3, 5.0, 0.7, 2.0])
    _, grad = bgnbd._terms(theta, x, t_x, T)
    for i in range(4):
        step = np.zeros(4)
        step[i] = 1e-6
        up, down = (
            bgnbd._terms(theta + step, x, t_x, T)[0].sum(),
            bgnbd._terms(theta - step, x, t_x, T)[0].sum(),
        )
        assert (up - down) / 2e-6 == pytest.approx(grad[i].sum(), rel=1e-5, abs=1e-6)
    keep = x > 0
    theta = np.log([5.0, 3.0, 12.0])
    _, grad = gammagamma._terms(theta, x[keep], m[keep])
    for i in range(3):
        step = np.zeros(3)
        step[i] = 1e-6
        up = gammagamma._terms(theta + step, x[keep], m[keep])[0].sum()
        down = gammagamma._terms(theta - step, x[keep], m[keep])[0].sum()
        assert (up - down) / 2e-6 == pytest.approx(grad[i].sum(), rel=1e-5, abs=1e-6)


# -- the predictions equal lifetimes' with the same parameters ------------------------------------


def lifetimes_models(bg: BGNBD, gg: GammaGamma) -> tuple[BetaGeoFitter, GammaGammaFitter]:
    bgf = BetaGeoFitter()
    bgf.params_ = pd.Series({"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b})
    bgf.predict = bgf.conditional_expected_number_of_purchases_up_to_time  # what fit() would set
    ggf = GammaGammaFitter()
    ggf.params_ = pd.Series({"p": gg.p, "q": gg.q, "v": gg.gamma})
    return bgf, ggf


def test_every_prediction_equals_lifetimes(shipped: pd.DataFrame, bg_fit: BGNBDFit, gg_fit: GammaGammaFit) -> None:
    bg, gg = bg_fit.params, gg_fit.params
    bgf, ggf = lifetimes_models(bg, gg)
    f, r, T, m = (shipped[c] for c in ("frequency", "recency", "T", "monetary_value"))

    assert relative(bgnbd.p_alive(bg, f, r, T), bgf.conditional_probability_alive(f, r, T)) < AGREE
    for t in HORIZONS:
        theirs = bgf.conditional_expected_number_of_purchases_up_to_time(t, f, r, T)
        assert relative(bgnbd.expected_purchases(bg, t, f, r, T), theirs) < AGREE, t
    assert relative(gammagamma.expected_spend(gg, f, m), ggf.conditional_expected_average_profit(f, m)) < AGREE
    for months, rate in ((12, 0.01), (3, 0.0), (24, 0.02)):
        ours = value.clv(bg, gg, f, r, T, m, months=months, monthly_discount=rate, month=value.periods_per_month(7))
        theirs = ggf.customer_lifetime_value(bgf, f, r, T, m, time=months, discount_rate=rate, freq="W")
        assert relative(ours, theirs) < AGREE, (months, rate)
    # and the values are not trivial: P(alive) spans (0, 1], CLV is positive
    alive = bgnbd.p_alive(bg, f, r, T)
    assert alive.min() < 0.05 and alive.max() == 1.0


def test_daily_summaries_and_monthly_clv_equal_lifetimes(sample: pd.DataFrame) -> None:
    s = summarise(sample["customer"], days_of(sample), sample["amount"], end_day=day_number(CALIBRATION_END))
    bg = bgnbd.fit(s.frequency, s.recency, s.T).params
    gg = gammagamma.fit(s.frequency, s.monetary_value).params
    assert bg.alpha == pytest.approx(4.414 * 7, rel=1e-3)  # alpha carries the time unit; r, a, b do not
    assert (round(bg.r, 3), round(bg.a, 3), round(bg.b, 3)) == (0.243, 0.793, 2.426)
    bgf, ggf = lifetimes_models(bg, gg)
    idx = pd.Index(s.customers)
    f, r, T, m = (pd.Series(v, index=idx) for v in (s.frequency, s.recency, s.T, s.monetary_value))
    ours = value.clv(bg, gg, f, r, T, m, month=value.periods_per_month(1))
    assert relative(ours, ggf.customer_lifetime_value(bgf, f, r, T, m, freq="D")) < AGREE
    assert relative(bgnbd.expected_purchases(bg, 30, f, r, T), bgf.predict(30, f, r, T)) < AGREE


# -- the summary builder --------------------------------------------------------------------------


def test_the_summary_equals_lifetimes_for_every_customer(sample: pd.DataFrame) -> None:
    theirs = summary_data_from_transaction_data(sample, "customer", "date", monetary_value_col="amount", freq="D")
    ours = summarise(sample["customer"], days_of(sample), sample["amount"])
    theirs = theirs.loc[list(ours.customers)]
    assert len(ours) == len(theirs) == 2357
    for column in ("frequency", "recency", "T"):  # whole days: equal to the last bit
        assert np.array_equal(getattr(ours, column), theirs[column].to_numpy()), column
    assert np.allclose(ours.monetary_value, theirs["monetary_value"].to_numpy(), rtol=1e-12, atol=0)
    assert ours.frequency.max() > 10 and (ours.monetary_value > 0).sum() > 1000  # not a degenerate sample


def test_calibration_and_holdout_equal_lifetimes(sample: pd.DataFrame, calibration: Summary) -> None:
    theirs = calibration_and_holdout_data(
        sample, "customer", "date", calibration_period_end="1997-09-30", observation_period_end="1998-06-30",
        freq="D", freq_multiplier=7, monetary_value_col="amount",
    )  # fmt: skip
    theirs = theirs.loc[list(calibration.customers)]
    assert np.allclose(calibration.frequency, theirs["frequency_cal"], rtol=0, atol=0)
    assert np.allclose(calibration.recency, theirs["recency_cal"], rtol=1e-12, atol=0)
    assert np.allclose(calibration.T, theirs["T_cal"], rtol=1e-12, atol=0)
    assert np.allclose(calibration.monetary_value, theirs["monetary_value_cal"], rtol=1e-12, atol=0)
    actual = holdout_purchases(calibration, sample["customer"], days_of(sample))
    assert (actual == theirs["frequency_holdout"].to_numpy()).all() and actual.sum() > 1000


def test_the_shipped_summary_is_the_calibration_summary_rounded(shipped: pd.DataFrame, calibration: Summary) -> None:
    assert list(calibration.customers) == [f"{i:04d}" for i in shipped["ID"]]
    assert (calibration.frequency == shipped["frequency"].to_numpy()).all()
    for ours, column in (
        (calibration.recency, "recency"),
        (calibration.T, "T"),
        (calibration.monetary_value, "monetary_value"),
    ):
        assert np.max(np.abs(ours - shipped[column].to_numpy())) <= 0.005 + 1e-9, column  # rounded to 2 decimals


def test_the_history_reader_takes_the_one_tenth_sample(calibration: Summary) -> None:
    purchases = read_purchases(DATA / "CDNOW_sample.txt", Format.cdnow)
    assert len(purchases) == 6919 and purchases.left_out == 0
    s = summarise(purchases.customer, purchases.day, purchases.amount, end_day=calibration.end_day, period_days=7)
    assert len(s) == len(calibration)
    assert sorted(s.frequency.tolist()) == sorted(calibration.frequency.tolist())


def test_the_first_purchase_is_the_earliest_whatever_the_input_order() -> None:
    s = summarise(["b", "a", "a", "a"], [12, 15, 10, 10], [5.0, 30.0, 1.0, 2.0], end_day=20)
    assert list(s.customers) == ["a", "b"]
    assert s.frequency.tolist() == [1.0, 0.0]  # a: days 10 (two purchases: one) and 15
    assert s.recency.tolist() == [5.0, 0.0] and s.T.tolist() == [10.0, 8.0]
    assert s.monetary_value.tolist() == [30.0, 0.0]  # day 10 (3.0) is the first, not a repeat
