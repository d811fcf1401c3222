"""The predictions for one customer in pure Python (``math`` only, no numpy or scipy): what a
per-customer, per-event evaluation in the engine can afford. The formulas are those of
``bgnbd``, ``gammagamma`` and ``value`` (the validation tests hold the two sets equal), with
the Gaussian hypergeometric function summed as its power series.

Why a plain series is enough here: the expected purchases need
((alpha + T) / (alpha + T + t))^(r + x) 2F1(r + x, b + x; a + b + x - 1; z), z = t / (alpha + T + t)
in [0, 1). Euler's transformation turns it into (1 - z)^(a - 1) 2F1(a + b - 1 - r, a - 1; a + b + x - 1; z)
(``bgnbd.expected_purchases``), whose first two parameters are small and do not grow with the
customer's purchases while the third does: its terms fall like z^n n^-(x + 2 + r - a), so a
few terms do for short horizons and frequent customers. The cost grows as z nears 1 (a
horizon t long next to alpha + T: a young customer and a long horizon), up to thousands of
terms; ``MAX_TERMS`` bounds it.
"""

from __future__ import annotations

import math

from .params import BGNBD, GammaGamma

MAX_TERMS = 100_000
TOLERANCE = 1e-15  # relative, on the sum


class SeriesError(ValueError):
    """The series did not converge within its bound of terms (or its argument is out of range).
    A ValueError: mypyc compiles a class deriving from it, not from ArithmeticError."""


def hyp2f1(a: float, b: float, c: float, z: float, *, max_terms: int = MAX_TERMS) -> float:
    """2F1(a, b; c; z) for 0 <= z < 1 and c not 0, -1, -2, ...: the power series
    sum of (a)_n (b)_n / ((c)_n n!) z^n, stopped when the rest cannot change the sum by more
    than ``TOLERANCE`` of it (the rest is bounded by a geometric series of the terms' ratio)."""
    _check(c, z)
    total = term = 1.0
    for n in range(max_terms):
        term *= (a + n) * (b + n) / ((c + n) * (n + 1)) * z
        total += term
        if abs(term) <= TOLERANCE * abs(total) and _rest_negligible(a, b, c, z, n + 1, term, total):
            return total
    raise SeriesError(f"2F1({a!r}, {b!r}; {c!r}; {z!r}) did not converge in {max_terms} terms")


def _coefficients(a: float, b: float, c: float, z: float, max_terms: int = MAX_TERMS) -> list[float]:
    """(a)_n (b)_n / ((c)_n n!) for n = 0, 1, ... until the series converges at ``z``; it then
    converges as well at any smaller z >= 0, so one list serves every horizon up to this one."""
    _check(c, z)
    coefficients = [1.0]
    k = power = total = 1.0
    for n in range(max_terms):
        k *= (a + n) * (b + n) / ((c + n) * (n + 1))
        coefficients.append(k)
        power *= z
        term = k * power
        total += term
        if abs(term) <= TOLERANCE * abs(total) and _rest_negligible(a, b, c, z, n + 1, term, total):
            return coefficients
    raise SeriesError(f"2F1({a!r}, {b!r}; {c!r}; {z!r}) did not converge in {max_terms} terms")


def _check(c: float, z: float) -> None:
    if not 0.0 <= z < 1.0:
        raise SeriesError(f"z = {z!r}: the series is summed for 0 <= z < 1 only")
    if c <= 0 and c == math.floor(c):
        raise SeriesError(f"c = {c!r}: 2F1 is not defined for c = 0, -1, -2, ...")


def _rest_negligible(a: float, b: float, c: float, z: float, n: int, term: float, total: float) -> bool:
    """Whether the terms after the n-th (``term``) cannot add ``TOLERANCE`` of ``total``: from
    here on the ratio of two terms stays below rho (it tends to z), so the rest is at most
    term rho / (1 - rho). A term of 0 ends a terminating series."""
    if term == 0.0:
        return True
    rho = max(abs((a + n) * (b + n) / ((c + n) * (n + 1))) * z, z)
    return rho < 1.0 and abs(term) * rho <= TOLERANCE * abs(total) * (1.0 - rho)


def _polynomial(coefficients: list[float], z: float) -> float:
    """sum of coefficients[n] z^n, term by term from n = 0 (a loop of floats: compiled, it
    runs in C on unboxed floats)."""
    total = 0.0
    power = 1.0
    for coefficient in coefficients:
        total += coefficient * power
        power *= z
    return total


def p_alive(bg: BGNBD, x: float, t_x: float, T: float) -> float:
    """P(alive | x, t_x, T) (``bgnbd.p_alive``)."""
    if x <= 0:
        return 1.0
    try:
        odds = bg.a / (bg.b + x - 1) * math.pow((bg.alpha + T) / (bg.alpha + t_x), bg.r + x)
    except OverflowError:
        return 0.0
    return 1.0 / (1.0 + odds)


def expected_purchases(bg: BGNBD, t: float, x: float, t_x: float, T: float) -> float:
    """E[Y(t) | x, t_x, T]: purchases expected in the next ``t`` time units (``bgnbd.expected_purchases``)."""
    return purchases_if_alive(bg, t, x, T) * p_alive(bg, x, t_x, T)


def purchases_if_alive(bg: BGNBD, t: float, x: float, T: float) -> float:
    """E[Y(t) | x, T, alive at T]: the part of ``expected_purchases`` that needs 2F1. It does
    not read t_x, so the customers of one (x, T) share it."""
    if t <= 0:
        return 0.0
    c = bg.a + bg.b + x - 1
    z = t / (bg.alpha + T + t)
    f = hyp2f1(bg.a + bg.b - 1 - bg.r, bg.a - 1, c, z)
    log_power = (bg.a - 1) * math.log1p(-z)
    bracket = -math.expm1(log_power + math.log(f)) if f > 0 else 1 - math.exp(log_power) * f  # f < 0: c < 0
    return c / (bg.a - 1) * bracket


def expected_spend(gg: GammaGamma, x: float, m: float) -> float:
    """E[value of a purchase | x, m] (``gammagamma.expected_spend``)."""
    if gg.q <= 1:
        raise ValueError(f"q = {gg.q:g} <= 1: the model's mean spend per purchase is infinite")
    return gg.p * (gg.gamma + x * m) / (gg.p * x + gg.q - 1)


def clv(
    bg: BGNBD,
    gg: GammaGamma,
    x: float,
    t_x: float,
    T: float,
    m: float,
    *,
    months: int = 12,
    monthly_discount: float = 0.01,
    month: float = 30.0,
) -> float:
    """The CLV over ``months`` months (``value.clv``): E[spend] P(alive) times the discounted
    purchases expected of a customer alive now (``discounted_purchases_if_alive``)."""
    if months < 1:
        raise ValueError("the horizon is at least one month")
    spend = expected_spend(gg, x, m)
    return spend * p_alive(bg, x, t_x, T) * discounted_purchases_if_alive(bg, x, T, months, monthly_discount, month)


def discounted_purchases_if_alive(
    bg: BGNBD, x: float, T: float, months: int, monthly_discount: float, month: float
) -> float:
    """sum over i = 1..months of (E[Y(i month)] - E[Y((i - 1) month)] | x, T, alive) / (1 + d)^i:
    one 2F1 per month, all sharing the series' coefficients (its parameters do not depend on
    the horizon). Like ``purchases_if_alive`` it does not read t_x."""
    c = bg.a + bg.b + x - 1
    factor = 1.0 / (1.0 + monthly_discount)
    longest = months * month
    coefficients = _coefficients(bg.a + bg.b - 1 - bg.r, bg.a - 1, c, longest / (bg.alpha + T + longest))
    discount = 1.0
    total = 0.0
    before = 1.0  # the decay at t = 0
    for i in range(1, months + 1):
        t = i * month
        z = t / (bg.alpha + T + t)
        now = math.exp((bg.a - 1) * math.log1p(-z)) * _polynomial(coefficients, z)
        discount *= factor
        total += (before - now) * discount
        before = now
    return c / (bg.a - 1) * total
