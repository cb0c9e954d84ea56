"""One-sided confidence bounds on the smoothed class probabilities q(y | x, D).

The paper (section 6.1, eq. 19, Algorithm 1 line 12) estimates pA and pB from N models
trained on independently noised copies of the training set:

- hard votes (each model votes for one class; the count k of votes for a class is
  Binomial(N, q)): exact one-sided Clopper-Pearson bounds from scipy.stats.beta;
- soft votes (mean over models of a probability in [0, 1]): Hoeffding's inequality,
  P(mean - q >= eps) <= exp(-2 N eps^2), so eps = sqrt(ln(1/alpha) / (2 N)).

Every bound is returned together with its complement 1 - bound, computed without
cancellation (for Clopper-Pearson from the other tail of the beta distribution), so that
Phi^-1 of a bound close to 1 is exact (see ``rab.radius``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import beta

from rab._validate import check_alpha, check_integers, check_probability

__all__ = [
    "Bound",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "cp_lower_bound",
    "cp_upper_bound",
    "hoeffding_epsilon",
    "hoeffding_lower",
    "hoeffding_lower_bound",
    "hoeffding_upper",
    "hoeffding_upper_bound",
]


class Bound(NamedTuple):
    """A probability bound p and its complement 1 - p, both float64 and computed separately."""

    value: np.ndarray
    complement: np.ndarray


def _check_counts(successes: ArrayLike, trials: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    k = check_integers(successes, "successes", minimum=0)
    n = check_integers(trials, "trials", minimum=1)
    try:
        k, n = np.broadcast_arrays(k, n)
    except ValueError as exc:
        raise ValueError(
            f"successes {k.shape} and trials {n.shape} have incompatible shapes"
        ) from exc
    if np.any(k > n):
        raise ValueError("successes must not exceed trials")
    return k, n


def cp_lower_bound(k: np.ndarray, n: np.ndarray, alpha: float) -> Bound:
    """Clopper-Pearson lower bound at level 1 - alpha on already validated counts.

    L = Beta(k, n - k + 1).ppf(alpha) for k > 0 and L = 0 for k = 0.  Since 1 - X ~
    Beta(b, a) when X ~ Beta(a, b), the complement is 1 - L = Beta(n - k + 1, k).isf(alpha).
    """
    positive = k > 0
    a = np.where(positive, k, 1).astype(np.float64)
    b = (n - k + 1).astype(np.float64)
    value = np.where(positive, beta.ppf(alpha, a, b), 0.0)
    complement = np.where(positive, beta.isf(alpha, b, a), 1.0)
    return Bound(np.asarray(value, np.float64), np.asarray(complement, np.float64))


def cp_upper_bound(k: np.ndarray, n: np.ndarray, alpha: float) -> Bound:
    """Clopper-Pearson upper bound at level 1 - alpha on already validated counts.

    U = Beta(k + 1, n - k).isf(alpha) for k < n and U = 1 for k = n; 1 - U =
    Beta(n - k, k + 1).ppf(alpha).
    """
    full = k >= n
    a = (k + 1).astype(np.float64)
    b = np.where(full, 1, n - k).astype(np.float64)
    value = np.where(full, 1.0, beta.isf(alpha, a, b))
    complement = np.where(full, 0.0, beta.ppf(alpha, b, a))
    return Bound(np.asarray(value, np.float64), np.asarray(complement, np.float64))


def clopper_pearson_lower(successes: ArrayLike, trials: ArrayLike, alpha: float) -> np.ndarray:
    """One-sided exact (Clopper-Pearson) lower confidence bound of a binomial proportion.

    P(L(K) <= p) >= 1 - alpha for K ~ Binomial(trials, p), every p.  Equals the lower end of
    the two-sided exact interval at confidence level 1 - 2 alpha.  Broadcasts its inputs.
    """
    k, n = _check_counts(successes, trials)
    return cp_lower_bound(k, n, check_alpha(alpha)).value


def clopper_pearson_upper(successes: ArrayLike, trials: ArrayLike, alpha: float) -> np.ndarray:
    """One-sided exact (Clopper-Pearson) upper confidence bound of a binomial proportion."""
    k, n = _check_counts(successes, trials)
    return cp_upper_bound(k, n, check_alpha(alpha)).value


def hoeffding_epsilon(trials: ArrayLike, alpha: float) -> np.ndarray:
    """Hoeffding half-width eps = sqrt(ln(1/alpha) / (2 N)) for N = trials votes in [0, 1]."""
    n = check_integers(trials, "trials", minimum=1)
    return np.sqrt(-np.log(check_alpha(alpha)) / (2.0 * n))


def hoeffding_lower_bound(mean: np.ndarray, eps: np.ndarray) -> Bound:
    """max(mean - eps, 0) and its complement min((1 - mean) + eps, 1), on validated input."""
    value = np.maximum(mean - eps, 0.0)
    complement = np.minimum((1.0 - mean) + eps, 1.0)
    return Bound(value, complement)


def hoeffding_upper_bound(mean: np.ndarray, eps: np.ndarray) -> Bound:
    """min(mean + eps, 1) and its complement max((1 - mean) - eps, 0), on validated input."""
    value = np.minimum(mean + eps, 1.0)
    complement = np.maximum((1.0 - mean) - eps, 0.0)
    return Bound(value, complement)


def _check_mean(mean: ArrayLike, trials: ArrayLike, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    mu = check_probability(mean, "mean")
    eps = hoeffding_epsilon(trials, alpha)
    try:
        mu, eps = np.broadcast_arrays(mu, eps)
    except ValueError as exc:
        raise ValueError(
            f"mean {mu.shape} and trials {eps.shape} have incompatible shapes"
        ) from exc
    return mu, eps


def hoeffding_lower(mean: ArrayLike, trials: ArrayLike, alpha: float) -> np.ndarray:
    """Hoeffding lower bound max(mean - eps, 0) of E[vote] from `trials` i.i.d. votes in [0, 1]."""
    return hoeffding_lower_bound(*_check_mean(mean, trials, alpha)).value


def hoeffding_upper(mean: ArrayLike, trials: ArrayLike, alpha: float) -> np.ndarray:
    """Hoeffding upper bound min(mean + eps, 1) of E[vote] from `trials` i.i.d. votes in [0, 1]."""
    return hoeffding_upper_bound(*_check_mean(mean, trials, alpha)).value
