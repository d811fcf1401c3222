"""The live population -> one summary per customer, as the models read them: what ``segengine
fit clv --live`` fits on, instead of a purchase history file.

Each customer's summary is read from the state's exact lifetime purchase summary, through the
features the rules read (segengine.state, as ``features.summary`` reads it for the predictions):

    x = repeat_purchase_days, t_x = purchase_recency_days, T = customer_age_days at ``now``,
    m = repeat_purchase_value

These are lifetimes' frequency, recency, T and monetary value with daily periods (the same
definitions as ``summary.summarise``; tests/unit/test_fit_from_store.py checks that both give
the same summaries and the same fit on CDNOW). Left out, and counted:

- customers without a purchase (no summary: browsers, or only refunds);
- customers with a purchase day after ``now``'s day (T < t_x: the state cannot forget a
  purchase, so no summary describes that moment);
- from the Gamma-Gamma fit only: customers with repeat purchases whose value the state does
  not know (``repeat_purchase_value`` null, a state from before it was kept): m is NaN, which
  the fit leaves out as it does m = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..state import DAY_MS, CustomerState
from .features import summary as state_summary
from .summary import Summary

if TYPE_CHECKING:
    from ..store import Store


@dataclass(frozen=True, slots=True)
class Population:
    summary: Summary
    read: int  # customers read (erased ones not counted)
    no_purchase: int  # left out: no purchase
    after_now: int  # left out: a purchase day after now's day
    unknown_value: int  # in the BG/NBD fit, left out of the Gamma-Gamma one: repeat value unknown


class _Collect:
    """The summaries of the customers fed to it, in days (None, or counted, when left out)."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.ids: list[str] = []
        self.rows: list[tuple[float, float, float, float]] = []
        self.first_days: list[int] = []
        self.last_days: list[int] = []
        self.read = self.no_purchase = self.after_now = self.unknown_value = 0

    def add(self, customer: str, state: CustomerState) -> None:
        self.read += 1
        found = state_summary(state, self.now)
        if found is None or state.first_purchase is None or state.last_purchase is None:
            self.no_purchase += 1
            return
        x, t_x, T, m = found
        if t_x > T:
            self.after_now += 1
            return
        if m is None:
            self.unknown_value += 1
        self.ids.append(customer)
        self.rows.append((float(x), float(t_x), float(T), float("nan") if m is None else float(m)))
        self.first_days.append(state.first_purchase // DAY_MS)
        self.last_days.append(state.last_purchase // DAY_MS)

    def population(self, period_days: float) -> Population:
        if not self.rows:
            raise ValueError(
                f"no customer with a purchase at or before now among the {self.read:,} read: nothing to fit"
            )
        order = np.argsort(np.asarray(self.ids, dtype=np.str_), kind="stable")
        values = np.asarray(self.rows, dtype=np.float64)[order]
        end = self.now // DAY_MS
        return Population(
            summary=Summary(
                customers=np.asarray(self.ids, dtype=np.str_)[order],
                frequency=values[:, 0],
                recency=values[:, 1] / period_days,
                T=values[:, 2] / period_days,
                monetary_value=values[:, 3],
                first_day=min(self.first_days),
                last_day=max(self.last_days),
                end_day=end,
                period_days=period_days,
            ),
            read=self.read,
            no_purchase=self.no_purchase,
            after_now=self.after_now,
            unknown_value=self.unknown_value,
        )


def summarise_states(states: Iterable[tuple[str, CustomerState]], now: int, *, period_days: float = 1.0) -> Population:
    """The summaries of these customers at ``now`` (epoch ms; T counts to its UTC day), in
    ``period_days`` units; ValueError when none has a purchase to fit on."""
    collect = _Collect(now)
    for customer, state in states:
        collect.add(customer, state)
    return collect.population(period_days)


async def read_population(
    store: Store, now: int, *, period_days: float = 1.0, progress: Callable[[int], None] | None = None
) -> Population:
    """The summaries of every customer the store holds (erased ones passed over), read in
    chunks; ``progress`` is called with the customers read so far after each chunk."""
    collect = _Collect(now)
    async for ids in store.scan_customers():
        for customer, loaded in (await store.load(ids)).items():
            if loaded.blob is not None:
                collect.add(customer, CustomerState.loads(loaded.blob))
        if progress is not None:
            progress(collect.read)
    return collect.population(period_days)
