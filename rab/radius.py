r"""Certified radii for Gaussian smoothing (paper eq. 11-15, Theorem 1, Corollary 1).

Joint evasion and backdoor condition (Theorem 1 with Gaussian noise)
--------------------------------------------------------------------
Let the test input get noise X ~ N(0, sigma_x^2 I_d) and each of the n training points
independent noise D_i ~ N(0, sigma_d^2 I_d), so Z = (X, D) ~ N(0, Sigma) with Sigma =
diag(sigma_x^2 I_d, sigma_d^2 I_{nd}).  The attack shifts Z by s = (delta, Delta).  Whitening
by Sigma^{-1/2} turns the test "Z versus Z + s" into "N(0, I) versus N(s~, I)" with

    rho = ||s~|| = sqrt(||delta||^2 / sigma_x^2 + sum_i ||delta_i||^2 / sigma_d^2).

For two isotropic Gaussians the likelihood ratio is increasing in <s~, z>, so the
Neyman-Pearson tests are half-spaces and the optimal type II error at level alpha_0 is
beta*(alpha_0) = Phi(Phi^-1(1 - alpha_0) - rho) (Appendix A, eq. 46, 47).  Condition (11),
beta*(1 - pA) + beta*(pB) > 1, reads

    Phi(Phi^-1(pA) - rho) + Phi(Phi^-1(1 - pB) - rho) > 1
    <=> Phi(Phi^-1(pA) - rho) > 1 - Phi(-Phi^-1(pB) - rho) = Phi(Phi^-1(pB) + rho)
    <=> rho < (Phi^-1(pA) - Phi^-1(pB)) / 2,

because Phi is strictly increasing.  With no test-time shift (delta = 0) and sigma_d = sigma
this is eq. 14, sqrt(sum_i ||delta_i||^2) < sigma/2 (Phi^-1(pA) - Phi^-1(pB)); with r poisoned
points sharing one pattern, sum_i ||delta_i||^2 = r ||delta||^2 gives eq. 15.  The Gaussian
case is symmetric in the sign of the shift, so the same radius serves Corollary 1 (bounds
measured on the backdoored training set, guarantee for the clean one) and Theorem 1 (the
other way round).  Theorem 2 shows the condition is tight: a linear base classifier attains
it (tested in tests/test_bounds.py).

Numerics: Phi^-1(p) is evaluated as norm.ppf(p) for p <= 1/2 and as norm.isf(1 - p) above,
with 1 - p supplied by the caller when it is known more accurately than the float p (see
``rab.confidence.Bound``).  Nothing is clipped: the radius stays finite and exact for p_a as
close to 1 as float64 represents, and is +inf only for p_a = 1 or p_b = 0 exactly (then the
Gaussian shift can never change the prediction, which is the correct limit of eq. 14).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from rab._validate import (
    check_integers,
    check_nonnegative,
    check_positive_scalar,
    check_probability,
)
from rab.confidence import Bound

__all__ = [
    "gaussian_radius",
    "joint_gaussian_certified",
    "joint_gaussian_margin",
    "per_sample_radius",
    "probit",
    "probit_gap",
    "radius_from_bounds",
]


def probit(p: ArrayLike, complement: ArrayLike | None = None) -> np.ndarray:
    """Phi^-1(p), using norm.isf(complement) for p > 1/2 (complement = 1 - p, default exact
    float subtraction, which is exact for p >= 1/2 by Sterbenz' lemma)."""
    pv = np.asarray(p, dtype=np.float64)
    cv = 1.0 - pv if complement is None else np.asarray(complement, dtype=np.float64)
    return np.where(pv <= 0.5, norm.ppf(pv), norm.isf(cv))


def probit_gap(a: Bound, b: Bound) -> np.ndarray:
    """Phi^-1(pA) - Phi^-1(pB) for validated bounds; NaN only where pA = pB in {0, 1}."""
    with np.errstate(invalid="ignore"):
        return probit(a.value, a.complement) - probit(b.value, b.complement)


def radius_from_bounds(a: Bound, b: Bound, sigma: float) -> np.ndarray:
    """Eq. 14 from bounds with exact complements: sigma/2 * gap where pA > pB, else 0."""
    gap = probit_gap(a, b)
    certified = (a.value > b.value) & (gap > 0)
    return np.where(certified, 0.5 * sigma * gap, 0.0)


def gaussian_radius(p_a: ArrayLike, p_b: ArrayLike, sigma: float) -> np.ndarray:
    """Certified L2 radius of eq. 14: sigma/2 * (Phi^-1(p_a) - Phi^-1(p_b)), 0 where p_a <= p_b.

    The bound is on sqrt(sum_i ||delta_i||_2^2) over all poisoned training points.  p_a, p_b
    broadcast; sigma > 0 is the training-noise standard deviation.
    """
    pa = check_probability(p_a, "p_a")
    pb = check_probability(p_b, "p_b")
    s = check_positive_scalar(sigma, "sigma")
    try:
        pa, pb = np.broadcast_arrays(pa, pb)
    except ValueError as exc:
        raise ValueError(f"p_a {pa.shape} and p_b {pb.shape} have incompatible shapes") from exc
    return radius_from_bounds(Bound(pa, 1.0 - pa), Bound(pb, 1.0 - pb), s)


def per_sample_radius(radius: ArrayLike, r: ArrayLike) -> np.ndarray:
    """Eq. 15: the largest ||delta|| of one pattern added to r training points, radius/sqrt(r)."""
    rad = check_nonnegative(radius, "radius", allow_inf=True)
    count = check_integers(r, "r", minimum=1)
    return rad / np.sqrt(count)


def _whitened_shift(norm_shift: np.ndarray, sigma: float) -> np.ndarray:
    """||shift|| / sigma, with 0/0 = 0 (no noise and no shift) and x/0 = inf for x > 0."""
    if sigma > 0.0:
        return norm_shift / sigma
    return np.where(norm_shift == 0.0, 0.0, np.inf)


def joint_gaussian_margin(
    p_a: ArrayLike,
    p_b: ArrayLike,
    *,
    test_shift_norm: ArrayLike,
    train_shift_norm: ArrayLike,
    sigma_test: float,
    sigma_train: float,
) -> np.ndarray:
    """(Phi^-1(pA) - Phi^-1(pB))/2 - rho, rho the whitened shift (module docstring, Theorem 1).

    test_shift_norm = ||delta|| (evasion part), train_shift_norm = sqrt(sum_i ||delta_i||^2)
    (backdoor part).  sigma_test or sigma_train may be 0 (no noise there); a non-zero shift
    where there is no noise gives rho = inf (disjoint supports, Proposition 1).  The
    condition of Theorem 1 holds where the margin is > 0.
    """
    pa = check_probability(p_a, "p_a")
    pb = check_probability(p_b, "p_b")
    dx = check_nonnegative(test_shift_norm, "test_shift_norm")
    dd = check_nonnegative(train_shift_norm, "train_shift_norm")
    sx = check_positive_scalar(sigma_test, "sigma_test", allow_zero=True)
    sd = check_positive_scalar(sigma_train, "sigma_train", allow_zero=True)
    rho = np.hypot(_whitened_shift(dx, sx), _whitened_shift(dd, sd))
    half_gap = 0.5 * probit_gap(Bound(pa, 1.0 - pa), Bound(pb, 1.0 - pb))
    with np.errstate(invalid="ignore"):
        margin = half_gap - rho
    # pA <= pB never certifies; NaN arises only from inf - inf, report it as -inf.
    return np.where((pa > pb) & ~np.isnan(margin), margin, -np.inf)


def joint_gaussian_certified(
    p_a: ArrayLike,
    p_b: ArrayLike,
    *,
    test_shift_norm: ArrayLike,
    train_shift_norm: ArrayLike,
    sigma_test: float,
    sigma_train: float,
) -> np.ndarray:
    """Theorem 1 for Gaussian noise: rho < (Phi^-1(pA) - Phi^-1(pB)) / 2 (bool array).

    See ``joint_gaussian_margin`` for the arguments; 0-d for scalar inputs.
    """
    return (
        joint_gaussian_margin(
            p_a,
            p_b,
            test_shift_norm=test_shift_norm,
            train_shift_norm=train_shift_norm,
            sigma_test=sigma_test,
            sigma_train=sigma_train,
        )
        > 0.0
    )
