"""Transactions -> one summary per customer, as the models read them: frequency (repeat
purchase periods), recency, T and monetary value.

The definitions are those of lifetimes' ``summary_data_from_transaction_data`` with daily
periods (``freq="D"``, ``freq_multiplier=period_days``), which the validation tests check:

- a customer's purchases on one day count as one purchase, of their total value;
- frequency = purchase days - 1 (the first is not a repeat purchase);
- recency = last purchase day - first purchase day; T = end day - first purchase day;
  both divided by ``period_days`` (7: weeks, as the literature fits CDNOW);
- monetary value = the mean value of the repeat purchase days (the first left out), 0 without any;
- purchases after the end day are left out (the calibration period ends there).

The first purchase day is the earliest one, whatever the order of the input (lifetimes takes
the first row it meets, the same for input sorted by time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt

EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

Vector = npt.NDArray[np.float64]
Days = npt.NDArray[np.int64]


def day_number(day: date) -> int:
    """Days since 1970-01-01 (the UTC day of an event time is ts_ms // 86_400_000)."""
    return day.toordinal() - EPOCH_ORDINAL


def day_date(number: int) -> date:
    return date.fromordinal(number + EPOCH_ORDINAL)


@dataclass(frozen=True, slots=True)
class Summary:
    customers: npt.NDArray[np.str_]  # sorted ids; the other arrays follow this order
    frequency: Vector
    recency: Vector
    T: Vector
    monetary_value: Vector
    first_day: int  # the first purchase day of anyone (days since 1970-01-01)
    last_day: int  # the last purchase day at or before end_day
    end_day: int  # the end of the period summarised (inclusive)
    period_days: float

    def __len__(self) -> int:
        return int(self.customers.size)


@dataclass(frozen=True, slots=True)
class _Days:
    """Purchases folded to one per customer and day, sorted by customer then day."""

    ids: npt.NDArray[np.str_]
    customer: npt.NDArray[np.intp]  # index into ids
    day: Days
    amount: Vector


def _purchase_days(customer: Sequence[str] | npt.ArrayLike, day: npt.ArrayLike, amount: npt.ArrayLike) -> _Days:
    cust = np.asarray(customer, dtype=np.str_)
    days = np.asarray(day, dtype=np.int64)
    amounts = np.asarray(amount, dtype=np.float64)
    if not (cust.shape == days.shape == amounts.shape) or cust.ndim != 1:
        raise ValueError("customer, day and amount must be flat and of one length")
    ids, index = np.unique(cust, return_inverse=True)
    if cust.size == 0:
        return _Days(ids, index, days, amounts)
    order = np.lexsort((days, index))
    index, days, amounts = index[order], days[order], amounts[order]
    starts = np.flatnonzero(np.r_[True, (index[1:] != index[:-1]) | (days[1:] != days[:-1])])
    return _Days(ids, index[starts], days[starts], np.add.reduceat(amounts, starts))


def summarise(
    customer: Sequence[str] | npt.ArrayLike,
    day: npt.ArrayLike,
    amount: npt.ArrayLike,
    *,
    end_day: int | None = None,
    period_days: float = 1.0,
) -> Summary:
    """The summary of every customer with a purchase at or before ``end_day`` (default: the
    last purchase day). ``day``: days since 1970-01-01; ``amount``: each purchase's value."""
    days = np.asarray(day, dtype=np.int64)
    if days.size == 0:
        raise ValueError("no purchases to summarise")
    end = int(days.max()) if end_day is None else int(end_day)
    keep = days <= end
    cust = np.asarray(customer, dtype=np.str_)
    folded = _purchase_days(cust[keep], days[keep], np.asarray(amount, dtype=np.float64)[keep])
    if folded.day.size == 0:
        raise ValueError("no purchases at or before the end day")
    n = folded.ids.size
    firsts = np.flatnonzero(np.r_[True, folded.customer[1:] != folded.customer[:-1]])
    lasts = np.r_[firsts[1:] - 1, folded.day.size - 1]
    count = np.bincount(folded.customer, minlength=n)
    repeat = np.ones(folded.day.size, dtype=bool)
    repeat[firsts] = False
    repeat_value = np.bincount(folded.customer, weights=np.where(repeat, folded.amount, 0.0), minlength=n)
    frequency = (count - 1).astype(np.float64)
    first, last = folded.day[firsts], folded.day[lasts]
    with np.errstate(invalid="ignore", divide="ignore"):
        monetary = np.where(frequency > 0, repeat_value / np.maximum(frequency, 1), 0.0)
    return Summary(
        customers=folded.ids,
        frequency=frequency,
        recency=(last - first) / period_days,
        T=(end - first) / period_days,
        monetary_value=monetary,
        first_day=int(first.min()),
        last_day=int(last.max()),
        end_day=end,
        period_days=period_days,
    )


def holdout_purchases(
    summary: Summary, customer: Sequence[str] | npt.ArrayLike, day: npt.ArrayLike, *, end_day: int | None = None
) -> Vector:
    """The purchase days of each of ``summary``'s customers after its end day and at or before
    ``end_day`` (default: the last day given), in ``summary``'s order: what a calibration
    summary's predictions are checked against (lifetimes' ``frequency_holdout``). Customers
    first seen after the calibration are not counted."""
    days = np.asarray(day, dtype=np.int64)
    cust = np.asarray(customer, dtype=np.str_)
    end = int(days.max()) if end_day is None else int(end_day)
    keep = (days > summary.end_day) & (days <= end)
    folded = _purchase_days(cust[keep], days[keep], np.zeros(int(keep.sum())))
    where = np.searchsorted(summary.customers, folded.ids)
    known = where < summary.customers.size
    known[known] = summary.customers[where[known]] == folded.ids[known]
    per_id = np.bincount(folded.customer, minlength=folded.ids.size).astype(np.float64)
    counts = np.zeros(len(summary), dtype=np.float64)
    counts[where[known]] = per_id[known]
    return counts
