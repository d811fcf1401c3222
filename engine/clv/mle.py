"""Maximum likelihood on log-parameters: every parameter of both models is positive, so the
optimiser works on their logarithms (unconstrained), from several starts, with the analytic
gradient, and keeps the best optimum found."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]
# log-parameters -> (total log-likelihood, its gradient with respect to the log-parameters)
Objective = Callable[[Vector], tuple[float, Vector]]


@dataclass(frozen=True, slots=True)
class Optimum:
    params: tuple[float, ...]  # the parameters themselves (not their logarithms)
    log_likelihood: float
    converged: bool  # the optimiser reported success from the start that won
    iterations: int
    starts: int


def maximise(objective: Objective, starts: Sequence[Sequence[float]], n: int) -> Optimum:
    """The maximum of ``objective`` over log-parameters, from each of ``starts`` (parameters,
    not logarithms). The optimiser minimises the mean negative log-likelihood (``n`` customers)
    so that its gradient tolerance means the same whatever the number of customers."""
    from scipy.optimize import minimize

    def mean_negative(theta: Vector) -> tuple[float, Vector]:
        ll, grad = objective(theta)
        if not np.isfinite(ll):
            return np.inf, np.zeros_like(theta)
        return -ll / n, -grad / n

    best = None
    for start in starts:
        theta0 = np.log(np.asarray(start, dtype=np.float64))
        result = minimize(mean_negative, theta0, jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 2000})
        if np.isfinite(result.fun) and (best is None or result.fun < best.fun):
            best = result
    if best is None:
        raise ValueError("the likelihood is not finite at any start: check the summaries")
    ll, _ = objective(best.x)
    return Optimum(
        params=tuple(float(v) for v in np.exp(best.x)),
        log_likelihood=float(ll),
        converged=bool(best.success) or _flat(objective, best.x, n),
        iterations=int(best.nit),
        starts=len(starts),
    )


def _flat(objective: Objective, theta: Vector, n: int) -> bool:
    """BFGS may stop on a loss of precision at the optimum itself: accept the point when the
    gradient of the mean log-likelihood is that small anyway."""
    _, grad = objective(theta)
    return bool(np.max(np.abs(grad)) / n < 1e-6)
