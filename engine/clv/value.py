"""Customer lifetime value: the expected spend per purchase times the purchases expected in
each month of a horizon, discounted monthly.

    CLV = sum over m = 1..M of  E[spend] * (E[Y(m k)] - E[Y((m - 1) k)]) / (1 + d)^m

with E[Y(t)] the BG/NBD's conditional expected purchases in the next t time units,
E[spend] the Gamma-Gamma's conditional expected value of a purchase, k the time units in a
month, d the monthly discount rate and M the horizon in months. It is lifetimes'
``customer_lifetime_value`` (a discrete monthly approximation of discounted expected
residual purchases, each month's purchases discounted as if made at its end), with lifetimes'
months: 30 days with daily summaries, 4.345 weeks with weekly ones (so a "month" is 30 days
in one unit and 30.4 in the other; kept so that the two agree).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .bgnbd import expected_purchases
from .gammagamma import expected_spend
from .mle import Vector
from .params import BGNBD, GammaGamma

MONTH_IN_DAYS = 30.0
MONTH_IN_WEEKS = 4.345


def periods_per_month(period_days: float) -> float:
    """Time units in a month: 30 days, 4.345 weeks (lifetimes' factors), 30 days otherwise."""
    if period_days == 7:
        return MONTH_IN_WEEKS
    return MONTH_IN_DAYS / period_days


def clv(
    bg: BGNBD,
    gg: GammaGamma,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    m: npt.ArrayLike,
    *,
    months: int = 12,
    monthly_discount: float = 0.01,
    month: float = MONTH_IN_DAYS,
) -> Vector:
    """The CLV of each customer over ``months`` months (``month``: time units in a month)."""
    if months < 1:
        raise ValueError("the horizon is at least one month")
    spend = expected_spend(gg, x, m)
    total = np.zeros_like(spend)
    before = np.zeros_like(spend)
    for i in range(1, months + 1):
        upto = expected_purchases(bg, i * month, x, t_x, T)
        total += spend * (upto - before) / (1 + monthly_discount) ** i
        before = upto
    return total
