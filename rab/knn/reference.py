"""Straightforward smoothed K-NN: scipy ncx2.cdf per point and level, DP in a Python loop.

The benchmark's baseline and an independent cross-check of ``exact_knn_proba``: a different
formulation of the same sum (eq. 75-77).  One forward pass over the training points in index
order carries, for every level l at once, two weighted tally distributions: "boundary not yet
chosen" (class counts of earlier points ranked before a later boundary: S_j <= l) and
"boundary chosen" (the boundary at level l plus the points ranked before it: earlier ones
already counted, later ones with S_j < l).  Each point either becomes the boundary (weight
P(S_j = l)) or updates the counts.  At the end the "chosen" mass with K points is summed per
winning class.  O(n L (K+1)^C) per test point with n Python iterations.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from rab.knn.inputs import check_problem


def level_probabilities(lam: np.ndarray, dim: int, sigma: float, edges: np.ndarray) -> np.ndarray:
    """(n, L + 1) CDF of each point's level at levels -1 .. L - 1 via scipy's ncx2 (eq. 70)."""
    inner = stats.ncx2.cdf(edges[None, :] / sigma**2, dim, lam[:, None])
    n = lam.size
    return np.hstack([np.zeros((n, 1)), inner, np.ones((n, 1))])


def _shift(state: np.ndarray, axis: int, cap: int, totals: np.ndarray) -> np.ndarray:
    """Add one to the count on ``axis`` (1 + class), dropping tallies whose total exceeds cap."""
    out = np.zeros_like(state)
    src = [slice(None)] * state.ndim
    dst = [slice(None)] * state.ndim
    src[axis], dst[axis] = slice(0, -1), slice(1, None)
    out[tuple(dst)] = state[tuple(src)]
    return np.where(totals <= cap, out, 0.0)


def reference_knn_proba(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_test: ArrayLike,
    *,
    sigma: float,
    k: int,
    edges: ArrayLike,
    num_classes: int | None = None,
) -> np.ndarray:
    """q(c | x) (m, C) by the forward boundary DP (see module docstring)."""
    problem = check_problem(
        X_train, y_train, X_test, sigma=sigma, k=k, edges=edges, num_classes=num_classes
    )
    k, classes, levels = problem.k, problem.num_classes, problem.num_levels
    grid = np.indices((k + 1,) * classes).reshape(classes, -1).T  # all tallies, counts <= k
    totals = grid.sum(axis=1).reshape((1,) + (k + 1,) * classes)
    winners = np.argmax(grid, axis=1).reshape((k + 1,) * classes)
    out = np.zeros((problem.X_test.shape[0], classes))
    for t in range(problem.X_test.shape[0]):
        lam = problem.noncentralities(slice(t, t + 1))[0]
        cdf = level_probabilities(lam, problem.dim, problem.sigma, problem.edges)
        open_ = np.zeros((levels,) + (k + 1,) * classes)
        open_[(slice(None),) + (0,) * classes] = 1.0
        chosen = np.zeros_like(open_)
        for j, c in enumerate(problem.y_train):
            at_most, below = cdf[j, 1:], cdf[j, :-1]
            ext = (slice(None),) + (None,) * classes
            shifted_open = _shift(open_, 1 + c, k, totals)
            chosen = (
                chosen * (1.0 - below)[ext]
                + _shift(chosen, 1 + c, k, totals) * below[ext]
                + shifted_open * (at_most - below)[ext]
            )
            open_ = np.where(
                totals <= k - 1, open_ * (1.0 - at_most)[ext] + shifted_open * at_most[ext], 0.0
            )
        full = chosen.sum(axis=0) * (totals[0] == k)
        out[t] = np.bincount(winners.ravel(), weights=full.ravel(), minlength=classes)
    return out
