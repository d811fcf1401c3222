"""Gamma-Gamma: how much a customer spends per purchase (Fader, Hardie & Lee 2005, "RFM and
CLV: using iso-value curves for customer base analysis", Journal of Marketing Research 42(4);
Fader & Hardie 2013, "The Gamma-Gamma model of monetary value").

A purchase's value is Gamma(p, nu) with nu ~ Gamma(q, gamma) across customers, independent of
how often they buy. A customer is summarised by x (purchases whose values are averaged: the
repeat purchases) and m (their mean value). The likelihood of one customer, in logs:

    ln L = lnG(p x + q) - lnG(p x) - lnG(q) + q ln(gamma) + (p x - 1) ln(m) + p x ln(x)
           - (p x + q) ln(gamma + x m)

Only customers with x > 0 and m > 0 carry information: the others are left out of the fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .mle import Vector, maximise
from .params import GammaGamma

ArrayLike = npt.ArrayLike


@dataclass(frozen=True, slots=True)
class GammaGammaFit:
    params: GammaGamma
    log_likelihood: float  # total over the customers fitted (x > 0, m > 0)
    customers: int
    converged: bool


def _terms(theta: Vector, x: Vector, m: Vector) -> tuple[Vector, Vector]:
    from scipy.special import digamma, gammaln

    p, q, gamma = np.exp(theta)
    px = p * x
    log_gxm = np.log(gamma + x * m)
    ll = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(gamma)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * log_gxm
    )
    d_pxq = digamma(px + q)
    g_p = x * (d_pxq - digamma(px) + np.log(m) + np.log(x) - log_gxm)
    g_q = d_pxq - digamma(q) + np.log(gamma) - log_gxm
    g_gamma = q / gamma - (px + q) / (gamma + x * m)
    return ll, np.stack([p * g_p, q * g_q, gamma * g_gamma])


def _fitted(x: ArrayLike, m: ArrayLike) -> tuple[Vector, Vector]:
    xs, ms = np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64)
    if xs.shape != ms.shape:
        raise ValueError("frequency and monetary value must be of one length")
    keep = (xs > 0) & (ms > 0)
    return xs[keep], ms[keep]


def log_likelihood(params: GammaGamma, x: ArrayLike, m: ArrayLike) -> Vector:
    """ln L of each customer with x > 0 and m > 0 (the others left out)."""
    xs, ms = _fitted(x, m)
    return _terms(np.log([params.p, params.q, params.gamma]), xs, ms)[0]


def fit(x: ArrayLike, m: ArrayLike, *, starts: Sequence[GammaGamma] = ()) -> GammaGammaFit:
    """The maximum-likelihood Gamma-Gamma for the customers with repeat purchases of value."""
    xs, ms = _fitted(x, m)
    if xs.size == 0:
        raise ValueError("no customer with repeat purchases of a positive value: nothing to fit")
    mean = float(np.mean(ms))
    tried = [(s.p, s.q, s.gamma) for s in starts] or [(1.0, 1.0, 1.0), (1.0, 2.0, mean), (5.0, 5.0, mean)]

    def objective(theta: Vector) -> tuple[float, Vector]:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ll, grad = _terms(theta, xs, ms)
        return float(ll.sum()), grad.sum(axis=1)

    best = maximise(objective, tried, xs.size)
    return GammaGammaFit(GammaGamma(*best.params), best.log_likelihood, int(xs.size), best.converged)


def expected_spend(params: GammaGamma, x: ArrayLike, m: ArrayLike) -> Vector:
    """E[value of a purchase | x, m] = p (gamma + x m) / (p x + q - 1): a weighted mean of the
    population's mean p gamma / (q - 1) and the customer's own m, the weight of m growing with
    x (the note's conditional expectation). x = 0 gives the population's mean. Needs q > 1 (else the mean
    spend is infinite)."""
    if params.q <= 1:
        raise ValueError(f"q = {params.q:g} <= 1: the model's mean spend per purchase is infinite")
    xs, ms = np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64)
    result: Vector = params.p * (params.gamma + xs * ms) / (params.p * xs + params.q - 1)
    return result
