"""The calibration/holdout check of the literature (Fader, Hardie & Lee 2005, conditional
expectations): fit on the calibration period, then compare, for the customers grouped by their
repeat purchases in it (0, 1, ..., 6, 7+), the mean purchases predicted for the holdout period
with the mean made."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bgnbd import expected_purchases
from .mle import Vector
from .params import BGNBD
from .summary import Summary

TOP = 7  # the last group: TOP or more repeat purchases


@dataclass(frozen=True, slots=True)
class HoldoutRow:
    group: str  # "0" ... "6", "7+"
    customers: int
    actual: float  # mean repeat purchases made in the holdout period
    predicted: float  # mean E[Y(holdout) | calibration]


def holdout_table(params: BGNBD, calibration: Summary, actual: Vector, duration: float) -> list[HoldoutRow]:
    """One row per calibration frequency (``actual``: holdout purchases in ``calibration``'s
    order; ``duration``: the holdout's length in the summary's time unit); empty groups left out."""
    predicted = expected_purchases(params, duration, calibration.frequency, calibration.recency, calibration.T)
    group = np.minimum(calibration.frequency, TOP).astype(np.int64)
    rows = []
    for k in range(TOP + 1):
        members = group == k
        n = int(members.sum())
        if n:
            label = f"{k}+" if k == TOP else str(k)
            rows.append(HoldoutRow(label, n, float(actual[members].mean()), float(predicted[members].mean())))
    return rows
