"""The predictive features a rule pack reads once it references a fitted model (its
``models:`` section, segengine.rules.models): per customer and decision, from the lifetime
purchase summary the state keeps and the model's closed forms (``closed``).

    p_alive                       P(alive | x, t_x, T), 0..1
    expected_purchases_30d        E[repeat purchase days in the next 30 days | x, t_x, T]
    expected_purchases_90d        ... next 90 days
    expected_purchases_365d       ... next 365 days
    expected_spend_per_purchase   E[value of a purchase day | x, m] (Gamma-Gamma)
    predicted_clv_365d            sum over 12 months of 365/12 days of E[spend] x the purchases
                                  expected in the month, discounted monthly at (1 + d)^(1/12) - 1

with x = repeat_purchase_days, t_x = purchase_recency_days, T = customer_age_days and
m = repeat_purchase_value (segengine.state), divided by the model's period (1 day, or 7 for a
model fitted in weeks); horizons are in days and converted the same way; d is the pack's
annual discount rate. All are null before a first purchase, and for a decision taken before
the customer's last purchase day (T < t_x: no summary describes that moment). With no repeat
purchase (x = 0) the Gamma-Gamma model's answer is its population mean p gamma / (q - 1), and
the CLV uses it; a customer with repeat purchases whose value the state no longer knows
(``repeat_purchase_value`` null) has null spend and CLV.

Time alone changes all but expected_spend_per_purchase, and each only decreases as T grows
with x, t_x and m fixed (segengine.timers finds the day a threshold is crossed by bisection on
T): P(alive) = 1 / (1 + a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x)) falls for x > 0
and is 1 for x = 0; a customer alive at T has a purchase rate ~ Gamma(r + x, alpha + T) and a
dropout ~ Beta(a, b + x), so what it is expected to buy in any later interval falls with T
(the rate's distribution moves down, the dropout's does not move), and the expected purchases
and the CLV are P(alive) times such amounts.

Cost: P(alive) and the spend are closed forms. The expected purchases and the CLV need 2F1
(``closed.purchases_if_alive``, ``closed.discounted_purchases_if_alive``), but only through a
part that depends on (x, T) alone, in whole days: customers with the same number of repeat
days and the same first purchase day share it. Those parts are kept per (x, T), each computed
when first read (``Parts``, at most PARTS_KEPT pairs: ~310 bytes each), so that a decision
costs P(alive), the spend, one look-up and a few multiplications.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final

from ..state import DAY_MS, FEATURES, CustomerState, Features, repeat_value
from . import closed
from .params import BGNBD, GammaGamma

P_ALIVE: Final = "p_alive"
SPEND: Final = "expected_spend_per_purchase"
CLV: Final = "predicted_clv_365d"
HORIZONS: Final = {"expected_purchases_30d": 30, "expected_purchases_90d": 90, "expected_purchases_365d": 365}
PREDICTED: Final = (P_ALIVE, *HORIZONS, SPEND, CLV)
CHANGED_BY_TIME: Final = frozenset(PREDICTED) - {SPEND}  # all only decrease as the customer ages
NEEDS_SPEND_MODEL: Final = frozenset({SPEND, CLV})  # the Gamma-Gamma model's
CHANGED_BY: Final = frozenset({"purchase", "erase"})  # the summary moves with purchases only
DEFAULT_ANNUAL_DISCOUNT: Final = 0.10
CLV_MONTHS: Final = 12
CLV_DAYS: Final = 365
PARTS_KEPT = 1 << 15  # (x, T) pairs whose 2F1 parts are kept: ~310 bytes each, ~10 MB when full
_SLOT = {name: i for i, name in enumerate((*HORIZONS, CLV))}  # where each part is in a pair's list

Summary = tuple[int, int, int, float | None]  # x, t_x days, T days, m


class Parts:
    """The parts of the expected purchases and of the CLV that need 2F1, per (x, T days): a
    list of one slot per feature (None until it is first read). At most PARTS_KEPT pairs,
    the oldest forgotten first (a day's pairs are what the decisions of the day read)."""

    def __init__(self, bg: BGNBD, period_days: int, monthly_discount: float) -> None:
        per = float(period_days)
        month = CLV_DAYS / CLV_MONTHS / per

        def purchases(days: int) -> Callable[[int, int], float]:
            return lambda x, T: closed.purchases_if_alive(bg, days / per, x, T / per)

        def value(x: int, T: int) -> float:
            return closed.discounted_purchases_if_alive(bg, x, T / per, CLV_MONTHS, monthly_discount, month)

        self.compute: list[Callable[[int, int], float]] = [*(purchases(d) for d in HORIZONS.values()), value]
        self.kept: dict[tuple[int, int], list[float | None]] = {}

    def of(self, x: int, T: int) -> list[float | None]:
        """The slots of (x, T), a new empty list if it has none yet."""
        slots = self.kept.get((x, T))
        if slots is None:
            if len(self.kept) >= PARTS_KEPT:
                del self.kept[next(iter(self.kept))]
            slots = self.kept[x, T] = [None] * len(self.compute)
        return slots

    def get(self, slot: int, x: int, T: int, slots: list[float | None] | None = None) -> float:
        """Part ``slot`` of (x, T), computed on its first read (``slots``: of(x, T), if known)."""
        slots = self.of(x, T) if slots is None else slots
        part = slots[slot]
        if part is None:
            part = slots[slot] = self.compute[slot](x, T)
        return part


@dataclass(frozen=True, eq=False)
class Predictor:
    """One fitted model (``version``: the model file's content version) as feature values."""

    bg: BGNBD
    gg: GammaGamma | None  # None: no usable Gamma-Gamma model (no spend, no CLV)
    period_days: int  # the model's time unit, in days
    annual_discount: float = DEFAULT_ANNUAL_DISCOUNT
    version: str = ""
    parts: Parts = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", Parts(self.bg, self.period_days, self.monthly_discount))

    @property
    def monthly_discount(self) -> float:
        """The monthly rate that makes the annual one over 12 months."""
        return float((1.0 + self.annual_discount) ** (1 / CLV_MONTHS)) - 1.0

    def same_model(self, other: Predictor) -> bool:
        return (self.version, self.annual_discount) == (other.version, other.annual_discount)

    def at(self, name: str, summary: Summary) -> float | None:
        """Feature ``name`` for a summary (x, t_x, T, m), t_x and T in days: what the features
        give (the timers probe ages with it)."""
        x, t_x, T, m = summary
        if t_x > T:
            return None
        per = self.period_days
        if name == SPEND:
            return self._spend(x, m)
        alive = closed.p_alive(self.bg, x, t_x / per, T / per)
        if name == P_ALIVE:
            return alive
        if name == CLV:
            spend = self._spend(x, m)
            return None if spend is None else spend * alive * self.parts.get(_SLOT[CLV], x, T)
        return self.parts.get(_SLOT[name], x, T) * alive

    def _spend(self, x: int, m: float | None) -> float | None:
        if self.gg is None or (m is None and x > 0):
            return None
        return closed.expected_spend(self.gg, x, 0.0 if m is None else m)

    def resolvers(self, wanted: Collection[str] = PREDICTED) -> dict[str, Callable[[Features], Any]]:
        """Feature name -> its value in a customer's ``Features``: the ``wanted`` features (what
        the rules read) all at once, in one pass on the first read of one; any other one alone
        (an explanation lists them all)."""
        together = self._group(frozenset(wanted) & frozenset(PREDICTED))
        alone = {name: self._group(frozenset({name})) for name in PREDICTED}

        def resolver(group: Callable[[Features], dict[str, Any]], name: str) -> Callable[[Features], Any]:
            return lambda features: group(features)[name]

        return {name: resolver(together if name in wanted else alone[name], name) for name in PREDICTED}

    def _group(self, names: frozenset[str]) -> Callable[[Features], dict[str, Any]]:
        """One pass computing ``names`` (and P(alive), which the others multiply) into the
        features. The summary is read from the state as segengine.state's features define it."""
        bg, per, get, of = self.bg, float(self.period_days), self.parts.get, self.parts.of
        horizons = [(name, _SLOT[name]) for name in HORIZONS if name in names]
        with_value = CLV in names
        gg = self.gg if SPEND in names or with_value else None
        nothing = dict.fromkeys(names | {P_ALIVE})

        def group(features: Features) -> dict[str, Any]:
            state = features.state
            first, last = state.first_purchase, state.last_purchase
            if first is None or last is None:
                features.update(nothing)
                return nothing
            day = first // DAY_MS
            t_x, T = last // DAY_MS - day, features.now // DAY_MS - day
            if t_x > T:  # decided before the last purchase day
                features.update(nothing)
                return nothing
            x = state.repeat_days
            p = closed.p_alive(bg, x, t_x / per, T / per)
            values: dict[str, Any] = dict.fromkeys(names)
            values[P_ALIVE] = p
            slots = of(x, T) if horizons or with_value else []
            for name, slot in horizons:
                part = slots[slot]
                values[name] = (get(slot, x, T, slots) if part is None else part) * p
            if gg is not None:
                m = repeat_value(state) if x else 0.0
                if m is not None:
                    spend = gg.p * (gg.gamma + x * m) / (gg.p * x + gg.q - 1)  # closed.expected_spend (q > 1: at load)
                    values[SPEND] = spend
                    if with_value:
                        values[CLV] = spend * p * get(_SLOT[CLV], x, T, slots)
            features.update(values)
            return values

        return group


def summary(state: CustomerState, now: int) -> Summary | None:
    """(x, t_x, T, m) of a customer at ``now`` (days); None before a first purchase."""
    x = FEATURES["repeat_purchase_days"](state, now)
    if x is None:
        return None
    return (
        x,
        FEATURES["purchase_recency_days"](state, now),
        FEATURES["customer_age_days"](state, now),
        FEATURES["repeat_purchase_value"](state, now),
    )
