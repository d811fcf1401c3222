"""BG/NBD: how often a customer buys, and when they stop (Fader, Hardie & Lee 2005, "Counting
your customers the easy way: an alternative to the Pareto/NBD model", Marketing Science 24(2)).

While alive a customer buys as a Poisson process of rate lambda ~ Gamma(r, alpha); after each
purchase they drop out with probability p ~ Beta(a, b). A customer is summarised by x (repeat
purchases), t_x (time of the last purchase since the first) and T (time since the first
purchase), in one time unit throughout: alpha is in that unit, r, a, b have none.

The likelihood of one customer (the paper's individual-level likelihood), in logs:

    A1 = lnG(r + x) - lnG(r) + r ln(alpha)
    A2 = lnB(a, b + x) - lnB(a, b) - (r + x) ln(alpha + T)
    A3 = lnB(a + 1, b + x - 1) - lnB(a, b) - (r + x) ln(alpha + t_x)        (x > 0 only)
    ln L = A1 + ln(e^A2 + [x > 0] e^A3)                                     (log-sum-exp)

so no Beta or Gamma function is ever formed outside log-space (Excel's #NUM! of the
original spreadsheet, Fader & Hardie's note 027, cannot happen).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .mle import Vector, maximise
from .params import BGNBD

ArrayLike = npt.ArrayLike


@dataclass(frozen=True, slots=True)
class BGNBDFit:
    params: BGNBD
    log_likelihood: float  # total over the customers, in the time unit of the summaries
    customers: int
    converged: bool


def _arrays(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[Vector, Vector, Vector]:
    return (np.asarray(x, dtype=np.float64), np.asarray(t_x, dtype=np.float64), np.asarray(T, dtype=np.float64))


def check_summaries(x: Vector, t_x: Vector, T: Vector) -> None:
    """ValueError unless 0 <= t_x <= T, x a whole number >= 0, and t_x = 0 when x = 0."""
    if not (x.shape == t_x.shape == T.shape) or x.size == 0:
        raise ValueError("frequency, recency and T must be non-empty and of one length")
    if np.any(x < 0) or np.any(x != np.floor(x)):
        raise ValueError("frequency must be whole numbers >= 0")
    if np.any(t_x < 0) or np.any(t_x > T):
        raise ValueError("recency must lie between 0 and T")
    if np.any((x == 0) & (t_x != 0)):
        raise ValueError("a customer without repeat purchases has recency 0")


def _terms(theta: Vector, x: Vector, t_x: Vector, T: Vector) -> tuple[Vector, Vector]:
    """ln L of each customer, and d ln L / d ln(r, alpha, a, b) (4 rows, one column per customer)."""
    from scipy.special import betaln, digamma, gammaln

    r, alpha, a, b = np.exp(theta)
    repeat = x > 0
    x1 = np.where(repeat, x, 1.0)  # keeps A3's arguments valid where it does not apply
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    a3 = np.where(repeat, betaln(a + 1, b + x1 - 1) - betaln(a, b) - (r + x) * np.log(alpha + t_x), -np.inf)
    top = np.maximum(a2, a3)
    lse = top + np.log(np.exp(a2 - top) + np.exp(a3 - top))
    w2, w3 = np.exp(a2 - lse), np.exp(a3 - lse)  # the two terms' shares of L

    d_ab = digamma(a + b)
    d_abx = digamma(a + b + x)
    g_r = digamma(r + x) - digamma(r) + np.log(alpha) - w2 * np.log(alpha + T) - w3 * np.log(alpha + t_x)
    g_alpha = r / alpha - w2 * (r + x) / (alpha + T) - w3 * (r + x) / (alpha + t_x)
    g_a = w2 * (d_ab - d_abx) + w3 * (digamma(a + 1) - digamma(a) + d_ab - d_abx)
    g_b = w2 * (digamma(b + x) - digamma(b) + d_ab - d_abx) + w3 * (
        np.where(repeat, digamma(b + x1 - 1), 0.0) - digamma(b) + d_ab - d_abx
    )
    grad = np.stack([r * g_r, alpha * g_alpha, a * g_a, b * g_b])
    return a1 + lse, grad


def log_likelihood(params: BGNBD, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Vector:
    """ln L of each customer."""
    xs, ts, Ts = _arrays(x, t_x, T)
    theta = np.log([params.r, params.alpha, params.a, params.b])
    return _terms(theta, xs, ts, Ts)[0]


def fit(x: ArrayLike, t_x: ArrayLike, T: ArrayLike, *, starts: Sequence[BGNBD] = ()) -> BGNBDFit:
    """The maximum-likelihood BG/NBD for these customers (from the given starts, or from
    three spread over the scale of T)."""
    xs, ts, Ts = _arrays(x, t_x, T)
    check_summaries(xs, ts, Ts)
    scale = float(np.mean(Ts)) or 1.0
    tried = [(s.r, s.alpha, s.a, s.b) for s in starts] or [
        (1.0, 1.0, 1.0, 1.0),
        (0.5, scale / 4, 0.5, 2.0),
        (1.0, scale, 1.0, 5.0),
    ]

    def objective(theta: Vector) -> tuple[float, Vector]:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ll, grad = _terms(theta, xs, ts, Ts)
        return float(ll.sum()), grad.sum(axis=1)

    best = maximise(objective, tried, xs.size)
    return BGNBDFit(BGNBD(*best.params), best.log_likelihood, int(xs.size), best.converged)


# -- predictions (the paper's closed forms) ---------------------------------------------------


def p_alive(params: BGNBD, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Vector:
    """P(alive | x, t_x, T) = 1 / (1 + [x > 0] a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x))
    (the paper's technical appendix): a customer without repeat purchases is alive for sure,
    since the model lets a customer drop out only right after a purchase."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    xs, ts, Ts = _arrays(x, t_x, T)
    x1 = np.where(xs > 0, xs, 1.0)
    with np.errstate(over="ignore"):
        odds = np.exp(np.log(a) - np.log(b + x1 - 1) + (r + xs) * (np.log(alpha + Ts) - np.log(alpha + ts)))
    return np.where(xs > 0, 1.0 / (1.0 + odds), 1.0)


def expected_purchases(params: BGNBD, t: float | ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Vector:
    """E[Y(t) | x, t_x, T]: the purchases expected in the next ``t`` time units (the paper's
    conditional expectation):

        (a + b + x - 1) / (a - 1) * [1 - ((alpha + T) / (alpha + T + t))^(r + x)
                                       * 2F1(r + x, b + x; a + b + x - 1; z)] / D,
        z = t / (alpha + T + t),   D = 1 + [x > 0] a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x)

    The Gaussian hypergeometric function is taken through Euler's transformation,
    2F1(A, B; C; z) = (1 - z)^(C - A - B) 2F1(C - A, C - B; C; z), which turns the bracket into

        1 - (1 - z)^(a - 1) * 2F1(a + b - 1 - r, a - 1; a + b + x - 1; z)

    whose 2F1 has two small parameters that do not grow with x: it stays near 1, where
    the direct form grows like (1 - z)^-(r + x) and overflows for frequent customers over long
    horizons. Its range: 0 <= z < 1 always (t >= 0); scipy's hyp2f1 is accurate there for
    these parameters, less so when z is near 1 and r + x + 1 - a is close to a whole number
    (its special case for an integer c - a - b). The 2F1 is positive unless its third parameter
    is negative (x = 0 and a + b < 1: the bracket is then formed without logarithms); at
    a + b = 1 with x = 0 it has a pole (not computed), and the model needs a != 1."""
    from scipy.special import hyp2f1

    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    xs, ts, Ts = _arrays(x, t_x, T)
    tt = np.asarray(t, dtype=np.float64)
    z = tt / (alpha + Ts + tt)
    c = a + b + xs - 1
    f = hyp2f1(a + b - 1 - r, a - 1, c, z)
    log_power = (a - 1) * np.log1p(-z)
    with np.errstate(divide="ignore", invalid="ignore"):
        bracket = np.where(f > 0, -np.expm1(log_power + np.log(f)), 1 - np.exp(log_power) * f)
    result: Vector = c / (a - 1) * bracket * p_alive(params, xs, ts, Ts)
    return result
