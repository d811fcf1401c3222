"""The two models' parameters: plain values, shared by the fitters (numpy), the pure-Python
predictions (``closed``) and the model file (``artefact``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BGNBD:
    """Purchase rate ~ Gamma(r, alpha) (alpha in the summaries' time unit); dropout
    probability after each purchase ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """Value of a purchase ~ Gamma(p, nu), nu ~ Gamma(q, gamma) across customers."""

    p: float
    q: float
    gamma: float
