"""Level probabilities and tally combination of rab.knn against scipy and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from rab.knn.backend import NumpyOps
from rab.knn.levels import (
    ChiSquareTable,
    cdf_bounds,
    ncx2_cdf_bounds,
    noncentral_chi2_cdf,
    poisson_weight_rel_error,
    poisson_weights,
    poisson_windows,
)
from rab.knn.tally import boundary_class_probabilities, exclusive_prefix_polys

LAMBDAS = np.array([0.0, 1e-3, 0.5, 3.0, 50.0, 230.0, 1000.0, 7500.0])


@pytest.mark.parametrize("dim", [1, 57, 784, 3072])
def test_poisson_mixture_matches_scipy_ncx2(dim: int) -> None:
    lam = LAMBDAS[20 * dim > LAMBDAS]
    mean = dim + lam
    sd = np.sqrt(2 * (dim + 2 * lam))
    x = np.unique(np.concatenate([mean + z * sd for z in (-6, -2, -0.5, 0, 1, 4)]))
    x = x[x > 0]
    table = ChiSquareTable(dim, 1.0, x)
    mix = noncentral_chi2_cdf(lam, table, slice(None))
    cdf, tail = mix.cdf, mix.tail
    expected = stats.ncx2.cdf(x[None, :], dim, lam[:, None])
    np.testing.assert_allclose(cdf, expected, rtol=0, atol=1e-11)
    assert np.all(tail < 1e-17)
    assert np.all(expected <= cdf + tail[:, None] + 1e-11)


def test_poisson_window_tail_bounds_exceed_true_tails() -> None:
    lam = np.array([0.0, 0.01, 1.0, 7.0, 60.0, 400.0, 15000.0])
    window = poisson_windows(lam)
    mu = lam / 2
    true_tail = stats.poisson.cdf(window.lo - 1, mu) + stats.poisson.sf(window.hi, mu)
    assert np.all(window.tail >= true_tail)
    assert np.all(window.tail <= 2e-18)
    assert np.all(window.lo <= mu) and np.all(window.hi >= mu)


def test_chernoff_and_mixture_bounds_bracket_scipy() -> None:
    rng = np.random.default_rng(0)
    dim = 20
    lam = rng.uniform(0, 200, 40)
    x = rng.uniform(1, 400, 40)
    lower, upper = ncx2_cdf_bounds(x, dim, lam)
    exact = stats.ncx2.cdf(x, dim, lam)
    assert np.all(lower <= exact + 1e-15) and np.all(exact <= upper + 1e-15)
    edges = np.linspace(5.0, 300.0, 30)
    lo, hi = cdf_bounds(np.concatenate([lam, [5e6]]), ChiSquareTable(dim, 1.0, edges))
    exact = stats.ncx2.cdf(edges[None, :], dim, np.concatenate([lam, [5e6]])[:, None])
    assert np.all(lo <= exact + 1e-12) and np.all(exact <= hi + 1e-12)


def test_prefix_polys_match_direct_products() -> None:
    rng = np.random.default_rng(3)
    prob = rng.uniform(size=(23, 2))
    ops = NumpyOps()
    prefix = exclusive_prefix_polys(prob, 4, ops)
    got = prefix.gather(np.arange(24), ops)  # (4, 24, 2)
    for s in range(24):
        poly = np.array([1.0])
        for p in prob[:s, 1]:
            poly = np.convolve(poly, [1 - p, p])
        expected = np.pad(poly, (0, 4))[:4]
        np.testing.assert_allclose(got[:, s, 1], expected, atol=1e-15)


@pytest.mark.parametrize("method", ["enumerate", "classwise"])
@pytest.mark.parametrize(("n", "k", "num_classes", "levels"), [(4, 2, 4, 3), (5, 3, 3, 3)])
def test_tally_combination_matches_enumeration(
    method: str, n: int, k: int, num_classes: int, levels: int
) -> None:
    """Both combination methods against all level assignments, for given level distributions."""
    rng = np.random.default_rng(n + k)
    labels = rng.integers(0, num_classes, n)
    p = rng.dirichlet(np.ones(levels), size=n)  # (n, L)
    cdf = np.concatenate([np.zeros((n, 1)), np.cumsum(p, axis=1)], axis=1)
    cdf[:, -1] = 1.0
    got = boundary_class_probabilities(
        cdf.T[None], labels, k, num_classes, NumpyOps(), method=method
    )[0]
    expected = np.zeros(num_classes)
    for assignment in itertools.product(range(levels), repeat=n):
        top = sorted(range(n), key=lambda i: (assignment[i], i))[:k]
        winner = np.argmax(np.bincount(labels[top], minlength=num_classes))
        expected[winner] += np.prod(p[np.arange(n), assignment])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)


def test_many_classes_methods_agree() -> None:
    rng = np.random.default_rng(4)
    n, levels = 300, 12
    labels = rng.integers(0, 10, n)
    cdf = np.sort(rng.uniform(size=(2, levels + 1, n)), axis=1) ** 8
    cdf[:, 0], cdf[:, -1] = 0.0, 1.0
    ops = NumpyOps()
    a = boundary_class_probabilities(cdf, labels, 5, 10, ops, method="enumerate")
    b = boundary_class_probabilities(cdf, labels, 5, 10, ops, method="classwise")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-12)


def _mp_poisson_pmf(mu: float, k: int) -> float:
    import mpmath

    with mpmath.workdps(40):
        m = mpmath.mpf(mu)
        return float(mpmath.exp(k * mpmath.log(m) - m - mpmath.loggamma(k + 1)))


@pytest.mark.parametrize("lam", [1.0, 30.0, 1e3, 1e5, 3e7, 1e10])
def test_poisson_weights_within_their_error_bound(lam: float) -> None:
    """Weights against 40-digit mpmath values across the window: each entry within its
    relative error bound, the row's total error within the returned bound (the direct log-pmf
    was off by 1e-10 relative at lambda = 1e5 and 2e-5 at 1e10)."""
    mu = lam / 2
    window = poisson_windows(np.array([lam]))
    lo, hi = int(window.lo[0]), int(window.hi[0])
    weights, row_error = poisson_weights(np.array([mu]), window.lo, window.hi, lo, hi - lo + 1)
    sd = np.sqrt(mu)
    ks = np.unique(np.clip(np.round(mu + sd * np.array([-8, -3, -1, -0.3, 0, 0.5, 2, 6])), lo, hi))
    for k in ks.astype(int):
        exact = _mp_poisson_pmf(mu, k)
        rel = poisson_weight_rel_error(np.array(mu), np.array(lo), np.array(k))
        assert abs(weights[0, k - lo] - exact) <= rel * exact, (k, weights[0, k - lo], exact)
    assert row_error[0] < 50 * np.sqrt(mu + 1) * np.finfo(float).eps + 1e-14
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("lam", [1.0, 10.0, 1e3, 1e4, 1e5])
def test_mixture_cdf_within_its_error_bound(lam: float) -> None:
    """d = 1, where F(x) = Phi(sqrt(x) - sqrt(lam)) - Phi(-sqrt(x) - sqrt(lam)) in closed form:
    |cdf - exact| <= error at edges across the distribution (mpmath, 40 digits)."""
    import mpmath

    sd = np.sqrt(2 + 4 * lam)
    x = np.unique(np.clip(1 + lam + sd * np.array([-5, -2, -0.7, 0, 0.4, 1.5, 4]), 1e-3, None))
    table = ChiSquareTable(1, 1.0, x)
    mix = noncentral_chi2_cdf(np.array([lam]), table, slice(None))
    with mpmath.workdps(40):
        root = mpmath.sqrt(lam)
        exact = [
            float(mpmath.ncdf(mpmath.sqrt(v) - root) - mpmath.ncdf(-mpmath.sqrt(v) - root))
            for v in x
        ]
    err = np.abs(mix.cdf[0] - np.array(exact))
    assert np.all(err <= mix.error[0] + mix.tail[0]), (err, mix.error)
    assert mix.error[0] < 1e-11


def test_gammainc_table_within_assumed_error() -> None:
    """The chi-square table's assumed absolute error against mpmath on a seeded sample."""
    import mpmath
    from scipy import special

    from rab.knn.levels import _GAMMAINC_ABS_ERROR

    rng = np.random.default_rng(0)
    a = np.round(2 * np.exp(rng.uniform(np.log(0.5), np.log(2e5), 60))) / 2
    x = np.maximum(a + rng.uniform(-6, 6, a.size) * np.sqrt(a), 1e-3)
    with mpmath.workdps(30):
        exact = [
            float(mpmath.gammainc(ai, 0, xi, regularized=True)) for ai, xi in zip(a, x, strict=True)
        ]
    assert np.all(np.abs(special.gammainc(a, x) - np.array(exact)) <= _GAMMAINC_ABS_ERROR)
