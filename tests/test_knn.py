"""Exact smoothed K-NN (rab.knn): brute force, independent formulations, Monte Carlo, real data."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from rab.bounds import certify_exact
from rab.knn import (
    certify_knn,
    default_edges,
    exact,
    exact_knn,
    exact_knn_proba,
    monte_carlo_knn_proba,
)
from rab.knn.bound_grid import bound_grid
from rab.knn.exact import _lambda_bins, boundary_levels
from rab.knn.inputs import KnnProblem, check_problem, knn_training
from rab.knn.levels import chi_square_table
from rab.knn.reference import reference_knn_proba
from rab.partition.knn import plain_knn_certificate


def brute_force_proba(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    sigma: float,
    k: int,
    edges: np.ndarray,
    num_classes: int,
) -> np.ndarray:
    """Sum over all L^n level assignments, level probabilities from scipy's ncx2 (eq. 70)."""
    n, d = X_train.shape
    levels = len(edges) + 1
    out = np.zeros((len(X_test), num_classes))
    for t, x in enumerate(X_test):
        lam = ((X_train - x) ** 2).sum(1) / sigma**2
        cdf = np.column_stack(
            [np.zeros(n)] + [stats.ncx2.cdf(e / sigma**2, d, lam) for e in edges] + [np.ones(n)]
        )
        p = np.diff(cdf, axis=1)
        for assignment in itertools.product(range(levels), repeat=n):
            weight = np.prod(p[np.arange(n), assignment])
            top = sorted(range(n), key=lambda i: (assignment[i], i))[:k]
            tally = np.bincount(y_train[top], minlength=num_classes)
            out[t, np.argmax(tally)] += weight
    return out


TINY_CASES = [  # (n, d, k, num_classes, num_levels, seed)
    (1, 2, 1, 2, 3, 0),
    (3, 1, 1, 2, 4, 1),
    (4, 2, 2, 2, 3, 2),
    (4, 3, 3, 3, 4, 3),
    (5, 2, 2, 3, 3, 4),
    (5, 4, 5, 2, 3, 5),
    (5, 6, 4, 4, 2, 6),
    (5, 3, 3, 2, 4, 7),
]


@pytest.mark.parametrize(("n", "d", "k", "num_classes", "num_levels", "seed"), TINY_CASES)
def test_matches_brute_force(
    n: int, d: int, k: int, num_classes: int, num_levels: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    X_train = rng.normal(size=(n, d))
    y_train = rng.integers(0, num_classes, n)
    X_test = np.vstack([rng.normal(size=(2, d)), X_train[:1]])  # includes lambda = 0
    sigma = float(rng.uniform(0.4, 1.2))
    edges = np.sort(rng.uniform(0.2, 3.0 * d, num_levels - 1))
    expected = brute_force_proba(X_train, y_train, X_test, sigma, k, edges, num_classes)
    got = exact_knn(
        X_train,
        y_train,
        X_test,
        sigma=sigma,
        k=k,
        edges=edges,
        num_classes=num_classes,
        backend="numpy",
    )
    np.testing.assert_allclose(got.proba, expected, rtol=0, atol=1e-12)
    assert np.all(got.slack < 1e-12)
    np.testing.assert_allclose(got.proba.sum(1), 1.0, rtol=0, atol=1e-12)


def test_ties_in_tally_go_to_smallest_class() -> None:
    """K = 2 with one point per class always ties 1-1: class 0 must win with probability 1."""
    X_train = np.array([[0.0, 0.0], [0.5, 0.0]])
    for y_train in (np.array([0, 1]), np.array([1, 0])):
        q = exact_knn_proba(
            X_train, y_train, np.array([[0.4, 0.1]]), sigma=1.0, k=2, edges=[0.5, 2.0]
        )
        np.testing.assert_allclose(q, [[1.0, 0.0]], atol=1e-15)


def test_k1_two_classes_direct_formula() -> None:
    """K = 1: q(c) = sum_{i in c} sum_l p_i^l prod_{j<i} P(S_j > l) prod_{j>i} P(S_j >= l)."""
    rng = np.random.default_rng(11)
    n, d = 40, 5
    X_train = rng.normal(size=(n, d))
    y_train = rng.integers(0, 2, n)
    X_test = rng.normal(size=(3, d))
    sigma = 0.9
    edges = default_edges(d, sigma, num_levels=30)
    got = exact_knn_proba(X_train, y_train, X_test, sigma=sigma, k=1, edges=edges)
    for t, x in enumerate(X_test):
        lam = ((X_train - x) ** 2).sum(1) / sigma**2
        cdf = np.column_stack(
            [np.zeros(n), stats.ncx2.cdf(edges[None, :] / sigma**2, d, lam[:, None]), np.ones(n)]
        )
        at_most, below = cdf[:, 1:], cdf[:, :-1]  # P(S <= l), P(S <= l - 1)
        expected = np.zeros(2)
        for i in range(n):
            after_i = np.prod(1.0 - at_most[:i], axis=0) * np.prod(1.0 - below[i + 1 :], axis=0)
            expected[y_train[i]] += np.sum((at_most[i] - below[i]) * after_i)
        np.testing.assert_allclose(got[t], expected, rtol=0, atol=1e-12)


def test_matches_forward_reference_dp() -> None:
    """A different DP (one forward pass with a 'boundary chosen' flag) on n = 60, C = 3."""
    rng = np.random.default_rng(5)
    n, d = 60, 4
    X_train = rng.normal(size=(n, d))
    y_train = rng.integers(0, 3, n)
    X_test = rng.normal(size=(3, d))
    edges = default_edges(d, 0.7, num_levels=25)
    args = dict(sigma=0.7, k=4, edges=edges, num_classes=3)
    expected = reference_knn_proba(X_train, y_train, X_test, **args)
    got = exact_knn(X_train, y_train, X_test, backend="numpy", **args)
    np.testing.assert_allclose(got.proba, expected, rtol=0, atol=1e-12)


def test_far_points_and_last_level() -> None:
    """Most points surely beyond the last edge: the top K is filled from the last level by index
    and the far points are skipped (with their mass accounted), matching the reference DP."""
    rng = np.random.default_rng(8)
    d = 3
    near = rng.normal(scale=0.3, size=(2, d))
    far = rng.normal(size=(30, d)) + 40.0
    X_train = np.vstack([far[:3], near, far[3:]])
    y_train = rng.integers(0, 2, len(X_train))
    X_test = np.zeros((2, d))
    edges = np.linspace(0.5, 12.0, 15)
    args = dict(sigma=1.0, k=5, edges=edges, num_classes=2)
    got = exact_knn(X_train, y_train, X_test, backend="numpy", **args)
    expected = reference_knn_proba(X_train, y_train, X_test, **args)
    np.testing.assert_allclose(got.proba, expected, rtol=0, atol=1e-12)
    assert np.all(got.levels[:, 1] == len(edges))  # the last level is a boundary level
    assert np.all(got.kept < len(X_train))  # far points beyond index K were skipped


@pytest.mark.parametrize("num_classes", [3, 10])  # tallies enumerated / DP over classes
def test_torch_backend_equals_numpy(num_classes: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    X_train = rng.normal(size=(200, 8))
    y_train = rng.integers(0, num_classes, 200)
    X_test = rng.normal(size=(5, 8))
    args = dict(sigma=1.0, k=5, edges=default_edges(8, 1.0, num_levels=60))
    a = exact_knn(X_train, y_train, X_test, backend="numpy", **args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # intra-op threads only add contention on a shared 2-core machine
    try:
        b = exact_knn(X_train, y_train, X_test, backend="torch", **args)
    finally:
        torch.set_num_threads(threads)
    assert b.backend == "torch"
    np.testing.assert_allclose(b.proba, a.proba, rtol=0, atol=1e-9)


def test_monte_carlo_matches_brute_force_within_4_se() -> None:
    rng = np.random.default_rng(4)
    X_train = rng.normal(size=(4, 2))
    y_train = np.array([0, 1, 1, 0])
    X_test = rng.normal(size=(2, 2))
    edges = np.array([0.5, 1.5, 3.0])
    expected = brute_force_proba(X_train, y_train, X_test, 0.8, 3, edges, 2)
    draws = 20_000
    est = monte_carlo_knn_proba(
        X_train, y_train, X_test, sigma=0.8, k=3, edges=edges, draws=draws, seed=123
    )
    se = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(est - expected) <= 4 * se + 1e-12)


def _mnist01(shared_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.load(shared_data / "mnist_01.npz", allow_pickle=False)
    flat = lambda a: a.reshape(len(a), -1).astype(np.float64) / 255.0  # noqa: E731
    return flat(data["X_train"]), data["y_train"].astype(np.int64), flat(data["X_test"])


def _spambase(shared_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raw = np.loadtxt(shared_data / "spambase.data", delimiter=",")
    raw = raw[np.random.default_rng(0).permutation(len(raw))]
    cut = int(0.8 * len(raw))
    return raw[:cut, :-1], raw[:cut, -1].astype(np.int64), raw[cut:, :-1]


def _check_against_monte_carlo(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, sigma: float, edges: np.ndarray
) -> None:
    exact = exact_knn(X_train, y_train, X_test, sigma=sigma, k=5, edges=edges, backend="numpy")
    np.testing.assert_allclose(exact.proba.sum(1), 1.0, rtol=0, atol=1e-9)
    assert np.all(exact.slack < 3e-8)  # mostly the worst-case rounding bounds of the CDFs
    pick = np.argsort(np.abs(exact.proba[:, 0] - 0.5))[:2]  # least certain points
    draws = 1500
    est = monte_carlo_knn_proba(
        X_train, y_train, X_test[pick], sigma=sigma, k=5, edges=edges, draws=draws, seed=7
    )
    q = exact.proba[pick]
    se = np.sqrt(q * (1 - q) / draws)
    assert np.all(np.abs(est - q) <= 4 * se + 1e-9), (est, q)


def test_spambase_against_monte_carlo(shared_data: Path) -> None:
    X_train, y_train, X_test = _spambase(shared_data)
    sigma = 1.0
    edges = default_edges(X_train.shape[1], sigma, spread=0.1)
    _check_against_monte_carlo(X_train, y_train, X_test[:40], sigma, edges)


def test_mnist01_subset_against_monte_carlo(shared_data: Path) -> None:
    X_train, y_train, X_test = _mnist01(shared_data)
    sigma = 2.0  # noisy enough for uncertain test points on a 1,000-point subset
    edges = default_edges(X_train.shape[1], sigma)
    _check_against_monte_carlo(X_train[:1000], y_train[:1000], X_test[:30], sigma, edges)


def test_certify_knn_uses_exact_probabilities() -> None:
    rng = np.random.default_rng(9)
    X_train = np.vstack([rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 3.0])
    y_train = np.repeat([0, 1], 30)
    X_test = np.vstack([np.zeros((1, 4)), np.full((1, 4), 3.0), np.full((1, 4), 1.5)])
    result = exact_knn(X_train, y_train, X_test, sigma=0.5, k=3, edges=default_edges(4, 0.5))
    batch = certify_knn(X_train, y_train, X_test, sigma=0.5, k=3)
    expected = certify_exact(result.proba, sigma=0.5, slack=result.slack)
    np.testing.assert_array_equal(batch.prediction, expected.prediction)
    np.testing.assert_allclose(batch.radius, expected.radius)
    assert batch.prediction[0] == 0 and batch.prediction[1] == 1
    assert batch.radius[0] > 0 and batch.radius[1] > 0
    np.testing.assert_allclose(batch.per_sample_radius(4), batch.radius / 2.0)


def test_default_edges_are_data_independent_quantiles() -> None:
    edges = default_edges(784, 1.0, num_levels=200, spread=1.0)
    assert edges.shape == (199,) and np.all(np.diff(edges) > 0)
    assert edges[0] == pytest.approx(stats.chi2.ppf(1e-4, 784))
    assert edges[-1] == pytest.approx(stats.ncx2.isf(1e-4, 784, 784.0))
    np.testing.assert_allclose(default_edges(57, 0.5, 10, 0.1)[0], 0.25 * stats.chi2.ppf(1e-4, 57))


GOOD = dict(sigma=1.0, k=1, edges=[1.0, 2.0])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (dict(k=4), "exceeds the number of training points"),
        (dict(k=0), "k must be a positive integer"),
        (dict(edges=[2.0, 1.0]), "strictly increasing"),
        (dict(edges=[1.0, 1.0]), "strictly increasing"),
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=-1.0), "sigma"),
        (dict(X_test=np.zeros((2, 3))), "same number of features"),
        (dict(y_train=np.array([0, 1])), "y_train must have shape"),
        (dict(y_train=np.array([0, 1, 2]), num_classes=2), "labels must lie in"),
        (dict(y_train=np.array([0, -1, 1])), "labels must lie in"),
        (dict(y_train=np.array([0.5, 1.0, 0.0])), "integer class labels"),
        (dict(X_train=np.array([[0.0, np.nan]] * 3)), "finite"),
    ],
)
def test_input_validation(override: dict, message: str) -> None:
    args = dict(
        X_train=np.zeros((3, 2)), y_train=np.array([0, 1, 1]), X_test=np.zeros((2, 2)), **GOOD
    )
    args.update(override)
    with pytest.raises(ValueError, match=message):
        exact_knn_proba(**args)
    with pytest.raises(ValueError, match=message):
        monte_carlo_knn_proba(**args, draws=10, seed=0)


def test_a_prepared_training_set_gives_the_same_results_and_is_its_own() -> None:
    """``knn_training``: the same probabilities, slack, certificates and plain K-NN counts as
    the arrays themselves; later writes to those arrays do not reach it; its own arrays are
    read-only; labels go with the prepared set, not beside it."""
    rng = np.random.default_rng(21)
    X_train, y_train, X_test = _spambase_like(rng, 300, 6)
    edges = default_edges(X_train.shape[1], 1.0, 200, 0.1)
    training = knn_training(X_train, y_train, 2)
    plain = exact_knn(X_train, y_train, X_test, sigma=1.0, k=5, edges=edges, num_classes=2)
    ready = exact_knn(training, None, X_test, sigma=1.0, k=5, edges=edges, num_classes=2)
    np.testing.assert_array_equal(ready.proba, plain.proba)
    np.testing.assert_array_equal(ready.slack, plain.slack)
    cert = certify_knn(training, None, X_test, sigma=1.0, k=5, spread=0.1)
    np.testing.assert_array_equal(
        cert.radius, certify_knn(X_train, y_train, X_test, sigma=1.0, k=5, spread=0.1).radius)
    counts = plain_knn_certificate(training, None, X_test, k=5, num_classes=2)
    np.testing.assert_array_equal(
        counts.count, plain_knn_certificate(X_train, y_train, X_test, k=5, num_classes=2).count)
    X_train[:] = 0.0  # the caller's arrays change; the prepared set does not
    again = exact_knn(training, None, X_test, sigma=1.0, k=5, edges=edges, num_classes=2)
    np.testing.assert_array_equal(again.proba, plain.proba)
    for array in (training.X, training.y, training.sq_norms):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1
    with pytest.raises(ValueError, match="holds its labels"):
        exact_knn(training, y_train, X_test, sigma=1.0, k=5, edges=edges)
    with pytest.raises(ValueError, match="y_train is required"):
        exact_knn(X_train, None, X_test, sigma=1.0, k=5, edges=edges)
    with pytest.raises(ValueError, match="labels must lie in"):
        exact_knn(knn_training(X_train, np.arange(300) % 3), None, X_test, sigma=1.0, k=5,
                  edges=edges, num_classes=2)


def test_import_does_not_load_torch() -> None:
    code = "import sys, rab.knn; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_noncentralities_keep_precision_for_large_features() -> None:
    """Near points with large norms (raw Spambase reaches 15,841) need direct differences."""
    from rab.knn.inputs import check_problem

    rng = np.random.default_rng(12)
    X_train = rng.uniform(0, 2e4, size=(50, 57))
    X_test = X_train[:5] + rng.normal(scale=1e-3, size=(5, 57))
    problem = check_problem(
        X_train, np.zeros(50), X_test, sigma=1.0, k=1, edges=[1.0], num_classes=1
    )
    direct = ((X_train[None] - X_test[:, None]) ** 2).sum(-1)
    np.testing.assert_allclose(problem.noncentralities(), direct, rtol=1e-12)


def test_float_probability_one_still_gives_a_finite_radius() -> None:
    # Far-apart clusters at small sigma: q(top) rounds to exactly 1.0 in float64, but the true
    # runner-up probability is positive, so the certificate must stay finite (rounding slack).
    rng = np.random.default_rng(3)
    X_train = np.concatenate([rng.normal(0.0, 0.01, (6, 4)), rng.normal(50.0, 0.01, (6, 4))])
    y_train = np.repeat([0, 1], 6)
    X_test = np.zeros((1, 4))
    edges = default_edges(4, 0.5, num_levels=50)
    result = exact_knn(X_train, y_train, X_test, sigma=0.5, k=3, edges=edges)
    assert result.proba[0, 0] == 1.0 and result.slack[0] > 0.0
    cert = certify_knn(X_train, y_train, X_test, sigma=0.5, k=3, edges=edges)
    assert cert.prediction[0] == 0
    assert np.isfinite(cert.radius[0]) and cert.radius[0] > 3.0


# Three points near the origin, four at distance 3 to 4.4 (issue 14): at sigma 0.3 the near
# points' level CDFs round to exactly 1 at the upper edges; the boundary (5th point) is far.
SMALL_SIGMA_X = np.array(
    [
        [-0.0568383782715896, 0.07604786670120942],
        [0.016639090887675213, 0.02930507695065772],
        [-0.0895163854094852, -7.681546060233706e-05],
        [-0.7365970691411916, 4.294600492051108],
        [-3.2285575302390175, -0.4282469922471247],
        [3.0385605062477774, -1.7369241833870936],
        [-3.257325309034276, 0.7581257134046684],
    ]
)
SMALL_SIGMA_Y = np.array([1, 0, 1, 1, 0, 0, 1])


def test_level_cdfs_rounding_to_one_do_not_settle_the_boundary() -> None:
    """Chernoff bounds with CDF bounds of exactly 1 must not stop the level range early: all
    the mass is computed (it matches the independent forward DP) and the point certifies."""
    X_test = np.zeros((1, 2))
    args = dict(sigma=0.3, k=5, edges=default_edges(2, 0.3), num_classes=2)
    got = exact_knn(SMALL_SIGMA_X, SMALL_SIGMA_Y, X_test, backend="numpy", **args)
    expected = reference_knn_proba(SMALL_SIGMA_X, SMALL_SIGMA_Y, X_test, **args)
    np.testing.assert_allclose(got.proba, expected, rtol=0, atol=1e-12)
    assert got.proba.sum() == pytest.approx(1.0, abs=1e-12) and got.slack[0] < 1e-10
    cert = certify_knn(SMALL_SIGMA_X, SMALL_SIGMA_Y, X_test, sigma=0.3, k=5)
    assert cert.prediction[0] == 1 and cert.radius[0] == pytest.approx(1.318, abs=1e-3)


def test_training_points_as_inputs_at_small_sigma_keep_their_mass(shared_data: Path) -> None:
    """MNIST 0/1 at sigma 0.05 with training points as inputs (lambda = 0 for one point, whose
    CDF is 1 in float64 from the first levels on): rows sum to 1 up to a small slack."""
    X_train, y_train, _ = _mnist01(shared_data)
    rows = X_train[:8]  # 6 of these lost 0.003 to all of their mass before the fix
    sigma = 0.05
    got = exact_knn(
        X_train, y_train, rows, sigma=sigma, k=5, edges=default_edges(784, sigma), backend="numpy"
    )
    assert np.all(got.slack < 1e-6)
    assert np.all(np.abs(1.0 - got.proba.sum(1)) <= got.slack)


def test_slack_bounds_the_error_at_large_noncentrality() -> None:
    """|proba - exact| <= slack with lambda about 1e5, where the Poisson weights' float error
    used to exceed the slack: d = 1 (closed-form level CDFs), K = 1 (closed-form tally), the
    whole reference in 40-digit mpmath."""
    import mpmath

    rng = np.random.default_rng(14)
    X_train = 316.0 + rng.uniform(-3.0, 3.0, (13, 1))
    y_train = rng.integers(0, 2, 13)
    edges = np.linspace(312.0**2, 320.0**2, 24)
    got = exact_knn(X_train, y_train, np.zeros((1, 1)), sigma=1.0, k=1, edges=edges)
    with mpmath.workdps(40):
        roots = [mpmath.mpf(float(v)) for v in X_train[:, 0]]
        cdf = [  # P(S_i <= l) for levels -1 .. L - 1: |N(root, 1)| <= sqrt(edge)
            [mpmath.mpf(0)]
            + [mpmath.ncdf(mpmath.sqrt(e) - r) - mpmath.ncdf(-mpmath.sqrt(e) - r) for e in edges]
            + [mpmath.mpf(1)]
            for r in roots
        ]
        exact = [mpmath.mpf(0), mpmath.mpf(0)]
        for i, c in enumerate(y_train):
            for lvl in range(len(edges) + 1):  # K = 1: i at level lvl, earlier above, later >=
                term = cdf[i][lvl + 1] - cdf[i][lvl]
                for j in range(13):
                    if j != i:
                        term *= 1 - cdf[j][lvl + 1 if j < i else lvl]
                exact[c] += term
    err = np.abs(got.proba[0] - np.array([float(v) for v in exact]))
    assert np.all(err <= got.slack[0]), (err, got.slack)


def test_authors_edge_rule_for_spread_below_one() -> None:
    """The authors' code: 200 edges, the lowest the 1e-4 quantile of sigma^2 chi2(d * spread)
    (Spambase, 56 features: 0.13, not the 24.9 of chi2(d)); identical to the default rule for
    spread 1 apart from the edge count."""
    authors = default_edges(56, 1.0, 200, 0.1, rule="authors")
    assert authors.shape == (200,)
    assert authors[0] == pytest.approx(stats.chi2.ppf(1e-4, 5.6)) and authors[0] < 0.14
    assert authors[-1] == pytest.approx(stats.ncx2.isf(1e-4, 56, 5.6))
    assert default_edges(56, 1.0, 200, 0.1)[0] == pytest.approx(24.86, abs=0.01)
    images = default_edges(784, 0.5, 200, 1.0, rule="authors")
    assert images[0] == default_edges(784, 0.5)[0] and images[-1] == default_edges(784, 0.5)[-1]
    X, y = SMALL_SIGMA_X, SMALL_SIGMA_Y
    cert = certify_knn(X, y, np.zeros((1, 2)), sigma=0.3, k=5, spread=0.1, edge_rule="authors")
    edges = default_edges(2, 0.3, 200, 0.1, rule="authors")
    q = exact_knn(X, y, np.zeros((1, 2)), sigma=0.3, k=5, edges=edges)
    np.testing.assert_allclose(cert.p_a, q.proba.max() - q.slack, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="rule must be one of"):
        default_edges(56, 1.0, rule="paper")  # type: ignore[arg-type]


def test_rows_solved_together_equal_rows_solved_alone() -> None:
    """Batches join test points with different level ranges and kept points; each row must get
    the probabilities and slack it gets alone (the slack's CDF-error term counts its own)."""
    rng = np.random.default_rng(21)
    X_train = np.vstack([rng.normal(size=(150, 6)), rng.normal(size=(150, 6)) + 2.5])
    y_train = np.repeat([0, 1], 150)
    X_test = np.vstack([X_train[:2], rng.normal(size=(4, 6)) * 2.0, X_train[200:201] + 0.1])
    args = dict(sigma=0.4, k=5, edges=default_edges(6, 0.4), backend="numpy")
    together = exact_knn(X_train, y_train, X_test, **args)
    assert len({tuple(r) for r in together.levels}) > 1  # the rows do differ
    for t in range(len(X_test)):
        alone = exact_knn(X_train, y_train, X_test[t : t + 1], **args)
        np.testing.assert_allclose(together.proba[t], alone.proba[0], rtol=0, atol=1e-15)
        assert together.slack[t] == pytest.approx(alone.slack[0], rel=0, abs=1e-15)
        assert together.kept[t] == alone.kept[0]


def test_the_rows_computed_together_stay_within_the_memory_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The groups whose level CDFs are one Poisson mixture hold at most ``_BATCH_VALUES``
    values over their points and the union of their level ranges (a group alone may hold
    more), every group in one part, in order; and rows cut into many parts get what they get
    in one."""
    monkeypatch.setattr(exact, "_BATCH_VALUES", 1000)
    window = np.array([[0, 4], [2, 6], [150, 199], [1, 3], [0, 0]])
    kept = np.array([10, 10, 30, 20, 2000])
    groups = [np.array([0]), np.array([1, 3]), np.array([2]), np.array([4])]
    parts = list(exact._cdf_parts(groups, window, kept))
    assert [g.tolist() for part in parts for g in part] == [g.tolist() for g in groups]
    for part in parts:
        rows = np.concatenate(part)
        values = (window[rows, 1].max() - window[rows, 0].min() + 2) * kept[rows].sum()
        assert len(part) == 1 or values <= 1000
    assert len(parts) == 3  # 0, 1 and 3 together; 2 (far levels) alone; 4 (many points) alone
    rng = np.random.default_rng(22)
    X_train, y_train = rng.normal(size=(120, 4)), rng.integers(0, 2, 120)
    X_test = rng.normal(size=(9, 4)) * 1.5
    args = dict(sigma=0.5, k=3, edges=default_edges(4, 0.5), backend="numpy")
    small = exact_knn(X_train, y_train, X_test, **args)
    monkeypatch.undo()
    whole = exact_knn(X_train, y_train, X_test, **args)
    np.testing.assert_allclose(small.proba, whole.proba, rtol=0, atol=1e-15)
    np.testing.assert_allclose(small.slack, whole.slack, rtol=0, atol=1e-15)


def _spambase_like(rng: np.random.Generator, n: int, m: int) -> tuple[np.ndarray, ...]:
    """Raw-count-like features (57 heavy-tailed columns, many zeros) in two classes."""
    scale = np.exp(rng.normal(0.0, 1.5, size=57))
    X = rng.lognormal(0.0, 1.2, size=(n + m, 57)) * scale * (rng.random((n + m, 57)) < 0.4)
    y = (X[:, :5].sum(1) + rng.normal(0, 1, n + m) > np.median(X[:, :5].sum(1))).astype(np.int64)
    X[y == 1, 5:10] *= 1.5
    test = np.vstack([X[n : n + m - 2], X[:2] + 0.05])  # two inputs next to training points
    return X[:n], y[:n], test


def _assert_batch_independent(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, **args: object
) -> None:
    """Certified all together and one by one: same levels and kept points, probabilities,
    slack, pA and pB within 1e-12, same predictions and radii up to rounding."""
    knn = dict(sigma=args["sigma"], k=args["k"], num_classes=2, backend="numpy")
    edges = default_edges(X_train.shape[1], float(args["sigma"]), 200, float(args["spread"]))
    together = exact_knn(X_train, y_train, X_test, edges=edges, **knn)
    cert = certify_knn(X_train, y_train, X_test, spread=args["spread"], **knn)
    for t in range(len(X_test)):
        alone = exact_knn(X_train, y_train, X_test[t : t + 1], edges=edges, **knn)
        np.testing.assert_array_equal(together.levels[t], alone.levels[0])
        assert together.kept[t] == alone.kept[0]
        np.testing.assert_allclose(together.proba[t], alone.proba[0], rtol=0, atol=1e-12)
        assert together.slack[t] == pytest.approx(alone.slack[0], rel=0, abs=1e-12)
        single = certify_knn(X_train, y_train, X_test[t : t + 1], spread=args["spread"], **knn)
        assert cert.prediction[t] == single.prediction[0]
        assert abs(cert.p_a[t] - single.p_a[0]) <= 1e-12
        assert abs(cert.p_b[t] - single.p_b[0]) <= 1e-12
        # Phi^-1 near pA = 1 turns the DP's 1e-16 rounding into a few 1e-9 of the radius
        np.testing.assert_allclose(cert.radius[t], single.radius[0], rtol=1e-6, atol=1e-12)


def test_inputs_certified_together_equal_inputs_certified_alone() -> None:
    """Spambase-like raw features (level ranges from one level to all, a few to hundreds of
    kept points): the batch, its planning and the shared level search change nothing."""
    X_train, y_train, X_test = _spambase_like(np.random.default_rng(5), 700, 14)
    _assert_batch_independent(X_train, y_train, X_test, sigma=1.0, k=5, spread=0.1)


def test_spambase_inputs_together_equal_alone(shared_data: Path) -> None:
    X_train, y_train, X_test = _spambase(shared_data)
    picked = X_test[np.random.default_rng(2).permutation(len(X_test))[:12]]
    _assert_batch_independent(X_train, y_train, picked, sigma=1.0, k=5, spread=0.1)


def _levels_by_full_evaluation(lam: np.ndarray, problem: KnnProblem) -> tuple[int, int]:
    """The boundary levels from the Chernoff bounds evaluated at every level at once."""
    table = chi_square_table(problem.dim, problem.sigma, problem.edges)
    lam_sorted = np.sort(lam)
    starts, ends = _lambda_bins(lam_sorted)
    count = (ends - starts).astype(np.float64)[:, None]
    grid = bound_grid(table)
    upper, lower = grid.upper(lam_sorted[starts]), grid.lower(lam_sorted[ends - 1])
    k = problem.k
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t_up = np.log(k / (count * upper).sum(0))[None, :]
        t_down = np.log((count * lower).sum(0) / max(k - 1, 1e-300))[None, :]
        grid = np.broadcast_to(np.array([0.5, 2.0, 8.0, 32.0, 128.0])[:, None], (5, t_up.size))
        t_up = np.vstack([np.where(t_up > 0, t_up, 1.0), grid])[:, None, :]
        t_down = np.vstack([np.where(t_down > 0, t_down, 1.0), grid])[:, None, :]
        log_up = (count * np.logaddexp(np.log1p(-upper), np.log(upper) + t_up)).sum(1)
        log_down = (count * np.logaddexp(np.log1p(-lower), np.log(lower) - t_down)).sum(1)
        log_up = (log_up - t_up[:, 0] * k).min(0)
        log_down = (log_down + t_down[:, 0] * (k - 1)).min(0)
    last, tol = problem.num_levels - 1, np.log(1e-16)
    possible, settled = np.flatnonzero(log_up > tol), np.flatnonzero(log_down <= tol)
    lo = int(possible[0]) if possible.size else last
    hi = int(settled[0]) if settled.size else last
    return lo, max(lo, hi)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_boundary_levels_equal_the_full_evaluation(k: int) -> None:
    """The level search (slices, bins with zero bound left out, levels skipped by the one-term
    bound) finds the levels of the bounds evaluated everywhere, row by row."""
    rng = np.random.default_rng(k)
    X_train, _, X_test = _spambase_like(rng, 500, 8)
    near = rng.normal(size=(300, 4))
    for train, test, sigma, spread in [
        (X_train, np.vstack([X_test, X_test[:1] + 1e4]), 1.0, 0.1),
        (near, np.vstack([near[:3] + 0.01, rng.normal(size=(3, 4)) * 3]), 0.5, 1.0),
    ]:
        edges = default_edges(train.shape[1], sigma, 200, spread)
        problem = check_problem(
            train, np.arange(len(train)) % 2, test, sigma=sigma, k=k, edges=edges, num_classes=2
        )
        lam = problem.noncentralities()
        table = chi_square_table(problem.dim, problem.sigma, problem.edges)
        got = boundary_levels(lam, problem, table)
        for t in range(len(test)):
            assert tuple(got[t]) == _levels_by_full_evaluation(lam[t], problem)
