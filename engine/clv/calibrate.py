"""Purchases -> both models fitted, the holdout check when the history is split, and the
artefact to write: everything ``segengine fit clv`` shows, without printing it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from . import bgnbd, gammagamma
from .artefact import DAYS_IN, BGNBDModel, ClvArtefact, DataWindow, GammaGammaModel, Models, build
from .bgnbd import BGNBDFit
from .gammagamma import GammaGammaFit
from .history import Purchases
from .holdout import HoldoutRow, holdout_table
from .summary import Summary, day_date, holdout_purchases, summarise


@dataclass(frozen=True, slots=True)
class FitReport:
    summary: Summary  # the calibration period's (the whole history without a split)
    bgnbd: BGNBDFit
    gamma_gamma: GammaGammaFit | None  # None: no repeat purchase of value to fit on
    spend_correlation: float | None  # frequency vs mean spend of the repeat customers (the model wants ~0)
    holdout: list[HoldoutRow]  # empty without a split
    holdout_length: float  # in the time unit
    holdout_actual: float  # repeat purchases made in the holdout by the calibration's customers
    holdout_predicted: float
    seconds: float
    artefact: ClvArtefact


def fit_purchases(
    purchases: Purchases,
    *,
    source: str,
    time_unit: str = "week",
    calibration_end_day: int | None = None,
    fitted_at: datetime | None = None,
) -> FitReport:
    """Fit on the purchases up to ``calibration_end_day`` (days since 1970-01-01; default all),
    T measured to that day; the later ones are the holdout the predictions are checked against."""
    if time_unit not in DAYS_IN:
        raise ValueError(f"time unit {time_unit!r}: use {' or '.join(DAYS_IN)}")
    if not len(purchases):
        raise ValueError("no purchases in the history")
    started = time.perf_counter()
    period = DAYS_IN[time_unit]
    summary = summarise(
        purchases.customer, purchases.day, purchases.amount, end_day=calibration_end_day, period_days=period
    )
    bg, gg, correlation = _fit(summary)
    seconds = time.perf_counter() - started

    last_day = max(purchases.day)
    rows: list[HoldoutRow] = []
    length = actual_total = predicted_total = 0.0
    if calibration_end_day is not None and last_day > summary.end_day:
        length = (last_day - summary.end_day) / period
        actual = holdout_purchases(summary, purchases.customer, purchases.day, end_day=last_day)
        rows = holdout_table(bg.params, summary, actual, length)
        actual_total = float(actual.sum())
        predicted = bgnbd.expected_purchases(bg.params, length, summary.frequency, summary.recency, summary.T)
        predicted_total = float(predicted.sum())

    window = DataWindow(
        source=source,
        first_purchase=day_date(min(purchases.day)),
        last_purchase=day_date(last_day),
        calibration_end=None if calibration_end_day is None else day_date(summary.end_day),
        time_unit="day" if time_unit == "day" else "week",
        customers=len(summary),
    )
    return FitReport(
        summary=summary,
        bgnbd=bg,
        gamma_gamma=gg,
        spend_correlation=correlation,
        holdout=rows,
        holdout_length=length,
        holdout_actual=actual_total,
        holdout_predicted=predicted_total,
        seconds=seconds,
        artefact=build(window, _models(bg, gg), fitted_at=fitted_at),
    )


def fit_summary(
    summary: Summary, *, source: str, time_unit: str = "week", fitted_at: datetime | None = None
) -> FitReport:
    """Fit on per-customer summaries made elsewhere (the live population's, segengine.clv.population),
    in ``time_unit`` already; no holdout. The artefact's purchase window is the summary's first
    and last purchase days. A monetary value of NaN (not known) leaves the customer out of the
    Gamma-Gamma fit only."""
    if time_unit not in DAYS_IN:
        raise ValueError(f"time unit {time_unit!r}: use {' or '.join(DAYS_IN)}")
    if summary.period_days != DAYS_IN[time_unit]:
        raise ValueError(f"the summary is in periods of {summary.period_days:g} days, not {time_unit}s")
    if not len(summary):
        raise ValueError("no customers to fit on")
    started = time.perf_counter()
    bg, gg, correlation = _fit(summary)
    window = DataWindow(
        source=source,
        first_purchase=day_date(summary.first_day),
        last_purchase=day_date(summary.last_day),
        time_unit="day" if time_unit == "day" else "week",
        customers=len(summary),
    )
    return FitReport(
        summary=summary,
        bgnbd=bg,
        gamma_gamma=gg,
        spend_correlation=correlation,
        holdout=[],
        holdout_length=0.0,
        holdout_actual=0.0,
        holdout_predicted=0.0,
        seconds=time.perf_counter() - started,
        artefact=build(window, _models(bg, gg), fitted_at=fitted_at),
    )


def _fit(summary: Summary) -> tuple[BGNBDFit, GammaGammaFit | None, float | None]:
    """Both models, and the correlation of frequency and mean spend of the repeat customers
    with a known, positive spend (the ones the Gamma-Gamma model is fitted on)."""
    bg = bgnbd.fit(summary.frequency, summary.recency, summary.T)
    with np.errstate(invalid="ignore"):
        repeat = (summary.frequency > 0) & (summary.monetary_value > 0)  # NaN (not known) > 0 is False
    gg = gammagamma.fit(summary.frequency, summary.monetary_value) if repeat.any() else None
    correlation = None
    if repeat.sum() > 2 and np.ptp(summary.frequency[repeat]) > 0 and np.ptp(summary.monetary_value[repeat]) > 0:
        correlation = float(np.corrcoef(summary.frequency[repeat], summary.monetary_value[repeat])[0, 1])
    return bg, gg, correlation


def _models(bg: BGNBDFit, gg: GammaGammaFit | None) -> Models:
    return Models(
        bgnbd=BGNBDModel(
            r=bg.params.r,
            alpha=bg.params.alpha,
            a=bg.params.a,
            b=bg.params.b,
            log_likelihood=bg.log_likelihood,
            customers=bg.customers,
        ),
        gamma_gamma=None
        if gg is None
        else GammaGammaModel(
            p=gg.params.p,
            q=gg.params.q,
            gamma=gg.params.gamma,
            log_likelihood=gg.log_likelihood,
            customers=gg.customers,
        ),
    )
