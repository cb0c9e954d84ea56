r"""Exact class probabilities of the Gaussian-smoothed K-NN (Theorem 3, eq. 69-80).

Per test point:

1. noncentralities lambda_i = ||x_i - x||^2 / sigma^2 (eq. 71);
2. the range of levels the K-th ranked point (the "boundary") can lie in: Chernoff bounds on
   the number of points below each edge, from bounds on each point's CDF (points binned by
   lambda, the CDF decreasing in lambda, read at grid values around the bin ends:
   ``rab.knn.bound_grid``), give levels [l_lo, l_hi] outside which the boundary lies with
   probability below about 1e-16 per side (for all test points of a chunk at once, each bound
   evaluated only at the levels up to the one sought; the levels are those of the bounds
   evaluated everywhere);
3. training points that lie below the top edge of that range with probability <= 1e-18
   (closed-form Chernoff bound) are skipped: in the computed model they sit beyond the range, a
   change of total variation at most their bound.  Points with index < K are always kept, as
   the last level can bring them into the top K (a point in the last level is in the top K
   only if its index is below K, since every point of lower index ranks before it);
4. test points with few kept points and similar level ranges are solved together (batches)
   where one DP costs less than separate ones, each exactly as if alone
   (:func:`_solve_batch`), so no result depends on the batch;
5. level CDFs of the remaining points by the Poisson mixture (``rab.knn.levels``), for many
   test points in one call (:func:`_level_cdfs`: each point's values are its own whatever is
   computed with it; a batch of 32 Spambase inputs took 20 - 25 % less than with one call
   per test point, measured);
6. the prefix/suffix count dynamic programme (``rab.knn.tally``).

Nothing is renormalised.  The computed probabilities are those of a model that differs from the
exact one by moving, per point, at most the reported mass (Poisson window tails and skipped
points) to far levels; by coupling, every class probability moves by at most the sum of those
masses.  The boundary mass outside the computed level range is 1 - sum(proba).  Float error
is bounded in two parts.  (a) The level CDFs: ``rab.knn.levels.noncentral_chi2_cdf`` returns a
bound e_j on the error of every CDF value of point j (Poisson weights, chi-square table, dot
product).  The computed class probability is affine in each point's vector of CDF values: with
the others fixed, q = sum_l P(S_j = l) Q_l with Q_l in [0, 1], and by summation by parts
q = sum_l F_j(l) (Q_l - Q_{l+1}) + Q_last, coefficients in [-1, 1]; so the CDF errors move q
by at most E = sum_j (number of CDF columns) e_j to first order; the higher-order terms, of
order E^2 (below 1e-15 for E < 3e-8), stay far below the rounding term (b), at least
4 eps n (L + K + 1).  (b) The dynamic programme: each class probability is multilinear in the
per-point level probabilities with coefficients that are probabilities, and every level
probability (a difference of two CDF values) and every truncated-polynomial product carries an
absolute rounding error of a few units of 2^-53, so the computed value is within
``4 eps * n * (L + K + 1)`` of the value at the computed CDFs (:func:`rounding_bound`).
``slack`` is the sum of the neglected masses, the outside boundary mass and both float terms,
so the exact q(c | x) lies within proba[c] +- slack; ``certify_knn`` moves it against the
prediction, so a float64 probability of exactly 1 never yields an infinite radius.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from threadpoolctl import ThreadpoolController

from rab.knn.backend import ArrayOps, get_backend
from rab.knn.bound_grid import bound_grid
from rab.knn.inputs import KnnProblem, KnnTraining, check_problem
from rab.knn.levels import (
    ChiSquareTable,
    chi_square_table,
    ncx2_cdf_bounds,
    noncentral_chi2_cdf,
)
from rab.knn.tally import boundary_class_probabilities

# Boundary mass allowed outside the computed level range, per side (Chernoff bound).
_LEVEL_PRUNE_LOG_TOL = math.log(1e-16)
# A point is skipped when its probability of reaching the computed levels is below this.
_POINT_DROP_TOL = 1e-18
# Chernoff parameters tried besides the Poisson-optimal one.
_T_GRID = np.array([0.5, 2.0, 8.0, 32.0, 128.0])[:, None]
# Absolute rounding error per operation on values in [0, 1] (forward error of the DP).
_ROUNDING_PER_TERM = 4 * float(np.finfo(np.float64).eps)
# Rows and levels of one slice of the Chernoff bounds on the boundary level (with 6 values of
# t and 82 bins, Spambase's, about 10^6 values).
_LEVEL_ROWS = 32
_LEVEL_SLICE = 64
# Relative margin, far above float64 rounding, of the test that skips levels surely unsettled.
_SETTLE_MARGIN = 1e-10
# Test points whose noncentralities are held at once.
_TEST_CHUNK = 256
# The dynamic programme's overhead per call in point-levels (one point at one boundary level
# for one row: about 55 ns here): about 0.18 ms plus 0.036 ms per sqrt(points) (measured,
# K = 5, two classes); and the most rows x levels of a joint call.
_DP_CALL_POINT_LEVELS = 3_300
_DP_SCAN_STEP_POINT_LEVELS = 650
_DP_JOINT_LEVELS = 256
# Working memory of one batch of the dynamic programme, in float64 values.
_BATCH_VALUES = 2**24
# The loaded BLAS libraries, found once (a search of the process's libraries costs up to a few
# ms per call with torch loaded); numpy's own BLAS, the one used here, is loaded before.
_BLAS: list[ThreadpoolController] = []


@dataclass(frozen=True)
class ExactKnnResult:
    """Class probabilities of the smoothed K-NN and the bound on what was neglected."""

    proba: np.ndarray  # (m, C) float64, sums to 1 - (boundary mass outside the levels computed)
    slack: np.ndarray  # (m,) |exact q(c | x) - proba[c]| <= slack for every class c
    levels: np.ndarray  # (m, 2) first and last boundary level computed
    kept: np.ndarray  # (m,) training points entering the dynamic programme
    backend: str


def _lambda_bins(lam_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bins over sorted lambdas: the 32 smallest alone, then growing by 10 % per bin."""
    n = lam_sorted.size
    geometric = np.unique(np.floor(32.0 * 1.1 ** np.arange(128)).astype(np.int64))
    starts = np.unique(np.concatenate([np.arange(min(n, 32)), geometric[geometric < n]]))
    ends = np.append(starts[1:], n)
    return starts, ends


def _log_bernoulli_mgf(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """log(1 - p + p e^t), the log moment generating function of a Bernoulli(p), for p in
    [0, 1] and any t, as logaddexp(log(1 - p), log(p) + t): no cancellation when p is close to
    1 and t very negative (``log1p(p * expm1(t))`` gives -inf for p = 1, t <= -37, as
    ``expm1(t)`` rounds to -1)."""
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log1p(-p), np.log(p) + t)


def boundary_levels(lam: np.ndarray, problem: KnnProblem, table: ChiSquareTable) -> np.ndarray:
    """Levels [l_lo, l_hi] (rows, 2) outside which the K-th ranked point lies w.p. < 1e-16 per
    side, for each row of lam (rows, n); each row as if alone.

    P(boundary <= l) = P(N_l >= K) and P(boundary > l) = P(N_l <= K - 1), N_l the number of
    points at level <= l.  Chernoff: P(N >= K) <= min_t e^{-tK} prod_j (1 - u_j + u_j e^t) with
    u_j >= P(S_j <= l), and P(N <= K-1) <= min_t e^{t(K-1)} prod_j (1 - v_j + v_j e^{-t}) with
    v_j <= P(S_j <= l).  u_j, v_j are CDF bounds at the grid values below and above the ends
    of the point's lambda bin (the CDF decreases in lambda; ``rab.knn.bound_grid``).  Only the
    choice of range relies on these bounds: the mass outside it is measured afterwards as
    1 - sum(proba).  l_lo is the first level whose bound on P(boundary <= l) exceeds the
    tolerance, l_hi the first (at least l_lo) whose bound on P(boundary > l) is within it; the
    bounds are evaluated from level 0 up only until both are found (:func:`_first_levels`).
    """
    lam = np.atleast_2d(lam)
    lam_sorted = np.sort(lam, axis=1)
    starts, ends = _lambda_bins(lam_sorted[0])  # the bins depend on n only
    count = (ends - starts).astype(np.float64)[:, None]
    bounds = bound_grid(table)
    shape = (lam.shape[0], starts.size, -1)  # (rows, bins, L - 1)
    u = bounds.upper(lam_sorted[:, starts].ravel()).reshape(shape)
    v = bounds.lower(lam_sorted[:, ends - 1].ravel()).reshape(shape)
    k = problem.k
    # Chernoff parameters: optimal for a Poisson count of the same mean, and a fixed grid.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t_up = np.log(k / (count * u).sum(1))[:, None, :]
        t_down = np.log((count * v).sum(1) / max(k - 1, 1e-300))[:, None, :]
        grid = np.broadcast_to(_T_GRID[None], (lam.shape[0], _T_GRID.size, u.shape[2]))
        t_up = np.concatenate([np.where(t_up > 0, t_up, 1.0), grid], axis=1)
        t_down = np.concatenate([np.where(t_down > 0, t_down, 1.0), grid], axis=1)
        # Every t > 0 gives log(1 - v + v e^-t) >= log(1 - v) and t (K - 1) >= 0, so no level
        # where sum_bins count log(1 - v) exceeds the tolerance (by far more than the rounding
        # of either sum) is settled: the search for the settled level starts at the first
        # other one.
        floor = np.zeros(v.shape[::2])
        for b in range(count.size):
            floor += count[b] * np.log1p(-v[:, b])
        margin = _SETTLE_MARGIN * (np.abs(floor) + np.abs(t_down).max(axis=1) * k + 1.0)
        candidate = floor <= _LEVEL_PRUNE_LOG_TOL + margin
        begin = np.where(candidate.any(axis=1), np.argmax(candidate, axis=1), v.shape[2])
        possible, settled = np.empty((2, lam.shape[0]), dtype=np.int64)
        for s in range(0, lam.shape[0], _LEVEL_ROWS):  # t = inf (no mass at <= l): nan, no hit
            r = slice(s, s + _LEVEL_ROWS)
            possible[r] = _first_levels(
                u[r], count, t_up[r], -t_up[r] * k, lambda b: b > _LEVEL_PRUNE_LOG_TOL
            )
            settled[r] = _first_levels(
                v[r],
                count,
                -t_down[r],
                t_down[r] * (k - 1),
                lambda b: b <= _LEVEL_PRUNE_LOG_TOL,
                begin[r],
            )
    last = problem.num_levels - 1
    lo = np.where(possible < 0, last, possible)
    hi = np.where(settled < 0, last, settled)
    return np.stack([lo, np.maximum(lo, hi)], axis=1).astype(np.int64)


def _first_levels(
    p: np.ndarray,
    count: np.ndarray,
    t: np.ndarray,
    offset: np.ndarray,
    hit: Callable[[np.ndarray], np.ndarray],
    begin: np.ndarray | None = None,
) -> np.ndarray:
    """Per row, the first level l >= begin (default 0) where ``hit(min_t(sum_bins count
    log(1 - p + p e^t) + offset))`` holds, -1 if none; p (rows, bins, levels), t and offset
    (rows, T, levels).

    Levels are evaluated in growing slices from each row's begin, only for the rows still
    searching.  Every value is the one the whole (rows, T, bins, levels) array would give: the
    terms are computed elementwise, the bins where p = 0 (their term is exactly 0) are left
    out, and the others are added in bin order, so neither the slices nor the other rows
    change a row's levels.
    """
    rows, _, levels = p.shape
    found = np.full(rows, -1, dtype=np.int64)
    begin = np.zeros(rows, dtype=np.int64) if begin is None else np.asarray(begin)
    active = np.flatnonzero(begin < levels)
    start, size = 0, 8
    while active.size:
        at = begin[active, None] + np.arange(start, start + size)[None, :]  # (rows, width)
        valid = at < levels
        at = np.minimum(at, levels - 1)[:, None, :]
        part = np.take_along_axis(p[active], at, axis=2)  # (rows, bins, width)
        nonzero = np.flatnonzero(part.any(axis=(0, 2)))
        part = np.ascontiguousarray(part[:, nonzero])[:, None]  # (rows, 1, bins, width)
        slope = np.take_along_axis(t[active], at, 2)[:, :, None]  # (rows, T, 1, width)
        terms = count[nonzero] * _log_bernoulli_mgf(part, slope)
        bound = np.zeros(terms.shape[:2] + terms.shape[3:])
        for b in range(nonzero.size):  # in bin order, whatever the shape
            bound += terms[:, :, b]
        bound = (bound + np.take_along_axis(offset[active], at, 2)).min(axis=1)
        hits = hit(bound) & valid
        first = np.argmax(hits, axis=1)
        done = hits[np.arange(active.size), first]
        found[active[done]] = at[done, 0, first[done]]
        active = active[~done & valid[:, -1]]
        start, size = start + size, min(2 * size, _LEVEL_SLICE)
    return found


def _level_cdfs(
    lam: list[np.ndarray], first: np.ndarray, width: np.ndarray, problem: KnnProblem,
    table: ChiSquareTable,
) -> list[tuple[np.ndarray, float]]:
    """Per row r: the (width[r] + 1, n_r) CDFs of its points ``lam[r]`` at levels
    first[r] - 1 .. first[r] + width[r] - 1 and the bound on the neglected mass plus the CDFs'
    float error.

    The rows' Poisson mixtures are one call over all their points and the union of their
    columns: a point's CDF value at a column, its window tail and its error bound are its own
    whatever else is computed with it (up to the rounding of the dot products' order), so
    each row gets what it gets alone."""
    last = problem.num_levels - 1
    rows = []
    for r, lam_r in enumerate(lam):
        levels = np.arange(first[r] - 1, first[r] + width[r])
        cols = levels[(levels >= 0) & (levels < last)]
        near, far = np.zeros(0, dtype=np.int64), 0.0
        if cols.size:
            _, reach = ncx2_cdf_bounds(problem.edges[cols[-1]] / problem.sigma**2, problem.dim,
                                       lam_r)
            surely_far = reach <= _POINT_DROP_TOL
            far, near = float(reach[surely_far].sum()), np.flatnonzero(~surely_far)
        rows.append((levels, cols, near, far))
    used = [cols for _, cols, _, _ in rows if cols.size]
    mix = None
    if used:
        low, high = min(int(c[0]) for c in used), max(int(c[-1]) for c in used)
        points = np.concatenate([lam_r[near] for lam_r, (_, _, near, _) in zip(lam, rows,
                                                                               strict=True)])
        mix = noncentral_chi2_cdf(points, table, slice(low, high + 1))
    out, offset = [], 0
    for lam_r, (levels, cols, near, far) in zip(lam, rows, strict=True):
        cdf = np.zeros((levels.size, lam_r.size))
        cdf[levels == last] = 1.0
        neglected = far
        if cols.size and mix is not None:
            mine = slice(offset, offset + near.size)
            offset += near.size
            at = np.flatnonzero((levels >= 0) & (levels < last))
            cdf[np.ix_(at, near)] = mix.cdf[mine, cols - low].T
            # q is affine in each point's CDF values with coefficients in [-1, 1] (module doc)
            neglected += float(mix.tail[mine].sum()) + cols.size * float(mix.error[mine].sum())
        out.append((cdf, neglected))
    return out


def _reach(lam: np.ndarray, top: np.ndarray, problem: KnnProblem) -> np.ndarray:
    """Chernoff bounds (rows, n) on P(S_j <= top_row): mass a point can bring to the levels."""
    x = (problem.edges[top] / problem.sigma**2)[:, None]
    return ncx2_cdf_bounds(x, problem.dim, lam)[1]


def rounding_bound(problem: KnnProblem) -> float:
    """Bound on the float64 rounding error of the dynamic programme in every computed q(c | x),
    given the computed level CDFs (their own error is bounded by ``noncentral_chi2_cdf``).

    Each class probability is multilinear in the per-point level probabilities, with
    coefficients that are probabilities; every level probability (a difference of CDF values)
    and every truncated-polynomial product carries an absolute error of a few units of 2^-53.
    Counting all n points and L levels (not only those a batch keeps) makes the bound the same
    whichever test points are solved together.
    """
    n = problem.X_train.shape[0]
    return _ROUNDING_PER_TERM * n * (problem.num_levels + problem.k + 1)


def _own_points(reach: np.ndarray, problem: KnnProblem) -> np.ndarray:
    """(rows, n): the points each row keeps (module doc, step 3)."""
    return (reach > _POINT_DROP_TOL) | (np.arange(reach.shape[1]) < problem.k)[None, :]


def _dp_cost(rows: int, width: int, points: int) -> float:
    """Cost of one dynamic programme over ``points`` points and ``width`` boundary levels for
    ``rows`` test rows, in point-levels, with its per-call overhead (the blocked scans take
    about sqrt(points) vectorised steps)."""
    overhead = _DP_CALL_POINT_LEVELS + _DP_SCAN_STEP_POINT_LEVELS * math.sqrt(points)
    return rows * (width + 1) * points + overhead


def _plan_batches(levels: np.ndarray, own: np.ndarray, k: int) -> Iterator[np.ndarray]:
    """Groups of test rows solved together: one DP over the union of their kept points and the
    widest level range, only where that costs no more than separate DPs (:func:`_dp_cost`) and
    holds at most ``_DP_JOINT_LEVELS`` row-levels (more make every step's arrays leave the
    cache: per point-level, one DP over 4 rows of 180 levels measured slower than 4 DPs) and
    ``_BATCH_VALUES`` values of working memory (prefix and suffix tables, CDFs, differences).
    Rows with similar kept points and levels come together; the grouping never changes a
    row's result (:func:`_solve_batch`)."""
    widths = levels[:, 1] - levels[:, 0] + 1
    kept = own.sum(axis=1)
    order = np.lexsort((levels[:, 0], levels[:, 1], kept))
    group = [int(order[0])]
    union, width = own[order[0]].copy(), int(widths[order[0]])
    total = _dp_cost(1, width, int(kept[order[0]]))
    for t in map(int, order[1:]):
        joined = union | own[t]
        w = max(width, int(widths[t]))
        cost = _dp_cost(len(group) + 1, w, int(joined.sum()))
        alone = _dp_cost(1, int(widths[t]), int(kept[t]))
        fits = (len(group) + 1) * (w + 1) <= _DP_JOINT_LEVELS
        fits &= (len(group) + 1) * (w + 1) * int(joined.sum()) * (2 * k + 6) <= _BATCH_VALUES
        if cost <= total + alone and fits:
            group.append(t)
            union, width, total = joined, w, total + alone
        else:
            yield np.array(group)
            group, union, width, total = [t], own[t].copy(), int(widths[t]), alone
    yield np.array(group)


def _solve_batch(
    levels: np.ndarray,
    reach: np.ndarray,
    own: np.ndarray,
    cdfs: list[tuple[np.ndarray, float]],
    problem: KnnProblem,
    ops: ArrayOps,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(proba, neglected mass, levels computed, points kept) for test rows solved together;
    reach: the rows' :func:`_reach` at their top levels, own: the points they keep
    (:func:`_own_points` of it), cdfs: their own points' level CDFs (:func:`_level_cdfs`).

    One dynamic programme over the union of the rows' kept points and the widest level range,
    but every row is computed as if alone: its own points (the others get CDF 0, so they never
    rank before the boundary and their factors are exactly 1) and its own levels (the CDFs are
    held constant outside them, so no boundary lies there).  So a row's probabilities, slack
    and certificate do not depend on which test points are solved with it (up to the rounding
    of the DP's summation order).
    """
    last = problem.num_levels - 1
    own_width = levels[:, 1] - levels[:, 0] + 1
    width = int(own_width.max())
    first = np.minimum(levels[:, 0], last + 1 - width)
    keep = own.any(axis=0)
    position = np.cumsum(keep) - 1
    cdf = np.zeros((levels.shape[0], width + 1, int(keep.sum())))
    neglected = np.where(own, 0.0, reach).sum(axis=1)
    for b, (mine, tails) in enumerate(cdfs):
        below = int(levels[b, 0] - first[b])
        above = width - int(own_width[b]) - below
        cdf[b][:, position[own[b]]] = np.concatenate(
            [np.repeat(mine[:1], below, axis=0), mine, np.repeat(mine[-1:], above, axis=0)]
        )
        neglected[b] += tails
    q = boundary_class_probabilities(
        ops.asarray(cdf), problem.y_train[keep], problem.k, problem.num_classes, ops
    )
    return np.clip(ops.to_numpy(q), 0.0, 1.0), neglected, levels.copy(), own.sum(axis=1)


def _cdf_parts(groups: list[np.ndarray], window: np.ndarray, kept: np.ndarray
               ) -> Iterator[list[np.ndarray]]:
    """Consecutive groups of rows whose level CDFs are computed in one call
    (:func:`_level_cdfs`: one Poisson mixture instead of one per row, most rows' cost being
    the per-call overhead), as many as hold at most ``_BATCH_VALUES`` values over their kept
    points and the union of their level ranges."""
    part: list[np.ndarray] = []
    low = high = points = 0
    for group in groups:
        g_low, g_high = int(window[group, 0].min()), int(window[group, 1].max())
        g_points = int(kept[group].sum())
        union = ((min(low, g_low), max(high, g_high), points + g_points) if part
                 else (g_low, g_high, g_points))
        if part and (union[1] - union[0] + 2) * union[2] > _BATCH_VALUES:
            yield part
            part, union = [], (g_low, g_high, g_points)
        part.append(group)
        low, high, points = union
    if part:
        yield part


def _solve(problem: KnnProblem, ops: ArrayOps) -> ExactKnnResult:
    m = problem.X_test.shape[0]
    table = chi_square_table(problem.dim, problem.sigma, problem.edges)
    proba = np.zeros((m, problem.num_classes))
    slack = np.zeros(m)
    levels = np.zeros((m, 2), dtype=np.int64)
    kept = np.zeros(m, dtype=np.int64)
    last = problem.num_levels - 1
    for start in range(0, m, _TEST_CHUNK):
        rows = np.arange(start, min(m, start + _TEST_CHUNK))
        lam = problem.noncentralities(slice(rows[0], rows[-1] + 1))
        window = boundary_levels(lam, problem, table)
        reach = _reach(lam, np.minimum(window[:, 1], last - 1), problem)
        own = _own_points(reach, problem)
        widths = window[:, 1] - window[:, 0] + 1
        for part in _cdf_parts(list(_plan_batches(window, own, problem.k)), window,
                               own.sum(axis=1)):
            at = np.concatenate(part)
            cdfs = dict(zip(at.tolist(), _level_cdfs(
                [lam[i, own[i]] for i in at], window[at, 0], widths[at], problem, table
            ), strict=True))
            for group in part:
                out = rows[group]
                proba[out], slack[out], levels[out], kept[out] = _solve_batch(
                    window[group], reach[group], own[group], [cdfs[i] for i in group.tolist()],
                    problem, ops
                )
    slack += np.maximum(1.0 - proba.sum(axis=1), 0.0) + rounding_bound(problem)
    return ExactKnnResult(proba, slack, levels, kept, ops.name)


def exact_knn(
    X_train: ArrayLike | KnnTraining,
    y_train: ArrayLike | None,
    X_test: ArrayLike,
    *,
    sigma: float,
    k: int,
    edges: ArrayLike,
    num_classes: int | None = None,
    backend: str = "auto",
) -> ExactKnnResult:
    """Exact smoothed K-NN probabilities with the bound on neglected mass (see module doc).

    backend: "auto" (torch on CUDA when available, else numpy), "numpy" or "torch".
    ``X_train``: the features, or a training set prepared once (``knn_training``, with
    ``y_train=None``).
    """
    problem = check_problem(
        X_train, y_train, X_test, sigma=sigma, k=k, edges=edges, num_classes=num_classes
    )
    # The matrix products here are small: BLAS threads only add synchronisation (10x slower
    # measured with OpenBLAS on a loaded 2-core machine), so they run single-threaded.
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    with _BLAS[0].limit(limits=1, user_api="blas"):
        return _solve(problem, get_backend(backend))


def exact_knn_proba(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_test: ArrayLike,
    *,
    sigma: float,
    k: int,
    edges: ArrayLike,
    num_classes: int | None = None,
) -> np.ndarray:
    """q(c | x) (m, C): probability that the K-NN on the noised training set predicts c.

    Noise N(0, sigma^2 I) on every training point; level of a noisy point = number of
    ``edges`` (squared distances in feature units) <= its squared distance to x; ranking by
    (level, training index); prediction = argmax of the top-K class tally, ties to the smallest
    class.  Rows sum to 1 up to the neglected mass reported by ``exact_knn`` (below 1e-12 on
    typical data).
    """
    return exact_knn(
        X_train, y_train, X_test, sigma=sigma, k=k, edges=edges, num_classes=num_classes
    ).proba
