r"""Certification for uniform smoothing noise U[a, b] on the training features (Corollary 2).

With D_i ~ U([a, b]^d) and backdoor patterns delta_i, the clean and shifted noise boxes
overlap with probability (under either distribution)

    1 - p0 = prod_i prod_j (1 - |delta_ij| / (b - a))_+                       (eq. 50)

and the likelihood ratio takes only the values 0, 1 and inf.  The Neyman-Pearson worst case
moves mass p0 away from the top class and onto the runner-up (Appendix A, eq. 58-63), so the
prediction is certified iff pA - p0 > pB + p0, i.e.

    1 - (pA - pB) / 2 < prod_i prod_j (1 - |delta_ij| / (b - a))_+            (eq. 17)

and, for one pattern delta on r training points, with the product raised to the power r
(eq. 18).  There is no closed-form radius: the certificate depends on the pattern's shape.
Both sides are compared in log space (log1p), so d * r may be huge without underflow.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from rab._validate import check_int_scalar, check_probability

__all__ = [
    "uniform_max_magnitude",
    "uniform_pattern_certified",
    "uniform_patterns_certified",
]


def _width(a: float, b: float) -> float:
    lo, hi = float(a), float(b)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"the noise interval [a, b] needs finite a < b, got a={a}, b={b}")
    return hi - lo


def _log_threshold(p_a: ArrayLike, p_b: ArrayLike) -> np.ndarray:
    """log(1 - (pA - pB) / 2), the left-hand side of eq. 17 in log space."""
    pa = check_probability(p_a, "p_a")
    pb = check_probability(p_b, "p_b")
    try:
        return np.log1p(-0.5 * (pa - pb))
    except ValueError as exc:
        raise ValueError(f"p_a {pa.shape} and p_b {pb.shape} have incompatible shapes") from exc


def _log_overlap(patterns: ArrayLike, width: float) -> float:
    """sum over every entry of log (1 - |delta| / (b - a))_+, i.e. log(1 - p0) of eq. 50."""
    delta = np.asarray(patterns, dtype=np.float64)
    if not np.all(np.isfinite(delta)):
        raise ValueError("patterns must be finite")
    ratio = np.abs(delta) / width
    if np.any(ratio >= 1.0):
        return -np.inf  # the boxes are disjoint in that coordinate (Proposition 1)
    return float(np.sum(np.log1p(-ratio)))


def uniform_patterns_certified(
    p_a: ArrayLike, p_b: ArrayLike, patterns: ArrayLike, *, a: float, b: float
) -> np.ndarray:
    """Eq. 17: is the prediction certified against these backdoor patterns?

    patterns holds every delta_i (e.g. shape (n, d), or (r, d) for the poisoned points
    only: unpoisoned rows are zero and contribute a factor 1); the product runs over all of
    its entries.  p_a, p_b broadcast; returns a bool array (0-d for scalars).
    """
    return _log_threshold(p_a, p_b) < _log_overlap(patterns, _width(a, b))


def uniform_pattern_certified(
    p_a: ArrayLike, p_b: ArrayLike, pattern: ArrayLike, *, a: float, b: float, r: int
) -> np.ndarray:
    """Eq. 18: one pattern (any shape, e.g. (d,)) added to r training points."""
    count = check_int_scalar(r, "r", minimum=1)
    return _log_threshold(p_a, p_b) < count * _log_overlap(pattern, _width(a, b))


def uniform_max_magnitude(
    p_a: ArrayLike, p_b: ArrayLike, *, a: float, b: float, num_coords: int, r: int = 1
) -> np.ndarray:
    """Supremum of the L2 norm t certified by eq. 18 for a pattern spread evenly over m coords.

    Each of the m = num_coords coordinates gets |delta_j| = t / sqrt(m) (the one-pixel
    trigger is m = 1, the four-pixel one m = 4); the pattern is on r training points.
    Solving (1 - t / (sqrt(m) (b - a)))^(m r) = 1 - (pA - pB) / 2 for t gives

        t_max = sqrt(m) (b - a) * (1 - (1 - (pA - pB)/2)^(1 / (m r))),

    computed as -expm1(log1p(-(pA - pB)/2) / (m r)).  Every t < t_max is certified; 0 where
    pA <= pB, and where t_max is below the smallest float64 (pA - pB near 1e-308 or less).
    Unlike the Gaussian radius this is for one pattern shape, not a norm ball.
    """
    m = check_int_scalar(num_coords, "num_coords", minimum=1)
    count = check_int_scalar(r, "r", minimum=1)
    log_t = _log_threshold(p_a, p_b)
    per_coord = -np.expm1(np.minimum(log_t, 0.0) / (m * count)) + 0.0  # + 0.0: never -0.0
    return np.sqrt(m) * _width(a, b) * per_coord
