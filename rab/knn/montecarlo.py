"""Monte Carlo estimate of the smoothed K-NN ("vanilla RAB" for K-NN, eq. 21).

Each draw gives every training point a noisy squared distance sigma^2 * ncx2(d, lambda_i)
(eq. 70, 71: the law of ||x_i + noise - x||^2, drawn directly instead of d-dimensional noise),
quantises it into levels, ranks by (level, index) and takes the top-K tally's argmax (ties to
the smallest class).  Used as the baseline and as an independent check of ``exact_knn_proba``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from rab.knn.inputs import check_problem

# Noisy distances drawn at once (float64 values).
_DRAW_VALUES = 1 << 22


def knn_votes(levels: np.ndarray, labels: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """Predictions (draws,) of the K-NN given levels (draws, n): key (level, index), top k."""
    n = levels.shape[1]
    key = levels.astype(np.int64) * n + np.arange(n)
    top = np.argpartition(key, k - 1, axis=1)[:, :k]
    tally = np.zeros((levels.shape[0], num_classes), dtype=np.int64)
    np.add.at(tally, (np.arange(levels.shape[0])[:, None], labels[top]), 1)
    return np.argmax(tally, axis=1)


def monte_carlo_knn_counts(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_test: ArrayLike,
    *,
    sigma: float,
    k: int,
    edges: ArrayLike,
    draws: int,
    seed: int | np.random.Generator,
    num_classes: int | None = None,
) -> np.ndarray:
    """Vote counts (m, C) over ``draws`` independent noisy training sets per test point."""
    problem = check_problem(
        X_train, y_train, X_test, sigma=sigma, k=k, edges=edges, num_classes=num_classes
    )
    if not isinstance(draws, int | np.integer) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    rng = np.random.default_rng(seed)
    n = problem.X_train.shape[0]
    per_chunk = max(1, _DRAW_VALUES // n)
    counts = np.zeros((problem.X_test.shape[0], problem.num_classes), dtype=np.int64)
    for t in range(problem.X_test.shape[0]):
        lam = problem.noncentralities(slice(t, t + 1))[0]
        for s in range(0, int(draws), per_chunk):
            size = (min(int(draws), s + per_chunk) - s, n)
            sq = problem.sigma**2 * rng.noncentral_chisquare(problem.dim, lam, size=size)
            levels = np.searchsorted(problem.edges, sq, side="right")
            votes = knn_votes(levels, problem.y_train, problem.k, problem.num_classes)
            counts[t] += np.bincount(votes, minlength=problem.num_classes)
    return counts


def monte_carlo_knn_proba(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_test: ArrayLike,
    *,
    sigma: float,
    k: int,
    edges: ArrayLike,
    draws: int,
    seed: int | np.random.Generator,
    num_classes: int | None = None,
) -> np.ndarray:
    """Estimated q(c | x) (m, C): vote frequencies over ``draws`` noisy training sets."""
    counts = monte_carlo_knn_counts(X_train, y_train, X_test, sigma=sigma, k=k, edges=edges,
                                    draws=draws, seed=seed, num_classes=num_classes)
    return counts / float(draws)
