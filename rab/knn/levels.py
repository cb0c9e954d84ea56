r"""Level probabilities of noisy training points (paper eq. 70, 71).

With Gaussian noise N(0, sigma^2 I_d) on training point x_i, the squared distance of the noisy
point to a test point x, divided by sigma^2, is noncentral chi-square with d degrees of freedom
and noncentrality lambda_i = ||x_i - x||^2 / sigma^2 (eq. 71).  Its level is the number of
edges <= the squared distance, so P(level <= l) = F_{d, lambda_i}(e_l / sigma^2) (eq. 70).

F is evaluated as a Poisson mixture of central chi-square CDFs,

    F_{d, lambda}(x) = sum_k Pois(k; lambda / 2) * chi2.cdf(x; d + 2k),

i.e. F = W @ G with G[k, l] = chi2.cdf(e_l / sigma^2; d + 2k) shared by every training and test
point of one (d, sigma, edges).  Each point uses its own window [lo, hi] of Poisson indices; the
Poisson mass outside it is bounded by the Chernoff (Bennett) bound exp(-mu h(t / mu)),
h(u) = (1 + u) log(1 + u) - u, and reported, never silently dropped: dropping the outside terms
is the same as moving that mass of the squared distance to +infinity (the last level), a change
of total variation at most the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special, stats

from rab._validate import check_positive_scalar

# Per-point Poisson window: the outside mass of each side is at most exp(-_WINDOW_LOG_TOL).
_WINDOW_LOG_TOL = 18.0 * math.log(10.0)
# Largest size of the shared chi-square table (Poisson terms x edges float64 values).
_MAX_TABLE_BYTES = 1 << 29


EdgeRule = Literal["quantiles", "authors"]
EDGE_RULES: tuple[EdgeRule, ...] = ("quantiles", "authors")


def default_edges(
    dim: int,
    sigma: float,
    num_levels: int = 200,
    spread: float = 1.0,
    rule: EdgeRule = "quantiles",
) -> np.ndarray:
    """Data-independent level edges (squared distances in feature units), equally spaced.

    The upper edge is the 1 - 1e-4 quantile of sigma^2 ncx2(d, d * spread / sigma^2) (a point
    at squared distance d * spread; the authors use spread = 1 for images and 0.1 for
    Spambase).  Two rules, identical for spread = 1 except for the number of edges:

    - ``"quantiles"`` (default): ``num_levels - 1`` edges, so exactly ``num_levels`` levels,
      the lowest at the 1e-4 quantile of sigma^2 chi2(d), the squared distance of a noisy copy
      of the test point itself: no noisy training point lies below it with probability above
      1e-4, so no level is spent on distances that cannot occur.
    - ``"authors"``: the authors' code exactly, ``num_levels`` edges (200, so L = 201 levels)
      with the lowest at the 1e-4 quantile of sigma^2 chi2(d * spread).  For spread != 1 that
      is below any reachable distance (Spambase, the authors' 56 features, sigma = 1: 0.13 instead
      of 24.9), so
      the first levels stay empty and the rest are coarser.  Use it to reproduce their tables.

    The edges depend on d, sigma and the configuration only, never on training features, so
    the K-NN stays one fixed function of the noisy data.
    """
    if not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not isinstance(num_levels, int | np.integer) or num_levels < 2:
        raise ValueError(f"num_levels must be an integer >= 2, got {num_levels!r}")
    if rule not in EDGE_RULES:
        raise ValueError(f"rule must be one of {EDGE_RULES}, got {rule!r}")
    s = check_positive_scalar(sigma, "sigma")
    spread = check_positive_scalar(spread, "spread")
    authors = rule == "authors"
    lo = s**2 * stats.chi2.ppf(1e-4, dim * spread if authors else dim)
    hi = s**2 * stats.ncx2.isf(1e-4, dim, dim * spread / s**2)
    return np.linspace(lo, hi, int(num_levels) if authors else int(num_levels) - 1)


def check_edges(edges: np.ndarray) -> np.ndarray:
    """Edges as a 1-D float64 array, finite and strictly increasing (ValueError otherwise)."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 1:
        raise ValueError(f"edges must be a non-empty 1-D array, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("edges must be finite")
    if np.any(np.diff(e) <= 0.0):
        raise ValueError("edges must be strictly increasing")
    return e


@dataclass(frozen=True)
class PoissonWindow:
    """Per-point window [lo, hi] of the Poisson(lambda / 2) mixture and its outside mass bound."""

    lo: np.ndarray  # int64 (n,)
    hi: np.ndarray  # int64 (n,)
    tail: np.ndarray  # float64 (n,): P(K < lo) + P(K > hi) <= tail


def _poisson_chernoff(mu: np.ndarray, k: np.ndarray) -> np.ndarray:
    """exp(-mu h((k - mu) / mu)): bounds P(K >= k) for k > mu and P(K <= k) for k < mu."""
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = special.xlogy(k, k / mu) - (k - mu)  # mu h(u) with u = k / mu - 1
        exponent = np.where(mu > 0, exponent, np.where(k > 0, np.inf, 0.0))
    return np.exp(-exponent)


def poisson_windows(lam: np.ndarray) -> PoissonWindow:
    """Windows of Poisson(lam / 2) with each outside tail below 1e-18 (Bernstein width)."""
    mu = 0.5 * np.asarray(lam, dtype=np.float64)
    ell = _WINDOW_LOG_TOL
    t_hi = ell / 3.0 + np.sqrt(ell**2 / 9.0 + 2.0 * ell * mu)
    upper_out = np.ceil(mu + t_hi)  # first excluded index above
    lower_out = np.ceil(mu - np.sqrt(2.0 * ell * mu)) - 1.0  # last excluded index below
    tail = _poisson_chernoff(mu, upper_out)
    has_lower = lower_out >= 0
    tail = tail + np.where(has_lower, _poisson_chernoff(mu, np.maximum(lower_out, 0.0)), 0.0)
    lo = np.where(has_lower, lower_out + 1, 0).astype(np.int64)
    return PoissonWindow(lo=lo, hi=(upper_out - 1).astype(np.int64), tail=tail)


class ChiSquareTable:
    """G[k, l] = chi2.cdf(edges[l] / sigma^2; d + 2k), grown on demand and shared by all points."""

    def __init__(self, dim: int, sigma: float, edges: np.ndarray) -> None:
        self.dim = int(dim)
        self.scaled_edges = check_edges(edges) / check_positive_scalar(sigma, "sigma") ** 2
        self.table = np.empty((0, self.scaled_edges.size))

    def rows(self, stop: int) -> np.ndarray:
        """The table for Poisson indices 0..stop-1 (computed with scipy's gammainc)."""
        limit = _MAX_TABLE_BYTES // (8 * max(1, self.scaled_edges.size))
        if stop > limit:
            raise ValueError(
                f"the Poisson mixture needs {stop} terms (more than {limit}): noncentralities "
                "are too large for these edges and sigma"
            )
        have = self.table.shape[0]
        if stop > have:
            new = min(max(stop, 2 * have), limit)
            k = np.arange(have, new, dtype=np.float64)[:, None]
            x = np.maximum(self.scaled_edges, 0.0)[None, :]
            self.table = np.vstack([self.table, special.gammainc(0.5 * self.dim + k, 0.5 * x)])
        return self.table[:stop]


_EPS = float(np.finfo(np.float64).eps)
# Assumed absolute error of scipy's regularized lower incomplete gamma function (cephes igam)
# on the chi-square table: measured below 0.3 eps against 40-digit mpmath values for shapes
# 0.5 to 2e6 within 8 standard deviations (tests/test_knn_levels.py checks a sample).
_GAMMAINC_ABS_ERROR = 4.0 * _EPS
# Poisson indices below this use the direct log-pmf, above it Stirling's series (Loader 2000).
_STIRLING_FROM = 16
# Coefficients 1/3, 1/5, ..., 1/17 of 2 sum_j v^(2j+1) / (2j+1) in the bd0 series, |v| < 0.1.
_BD0_SERIES = 1.0 / np.arange(3.0, 19.0, 2.0)


def _stirling_error(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(k!) - (k + 1/2) log k + k - log(2 pi) / 2 for k >= 16 by its asymptotic series
    (terms through k^-9; the first omitted one, 691 / (360360 k^11) < 1.1e-16, and the
    rounding are returned as an absolute error bound)."""
    r = 1.0 / (k * k)
    value = (1.0 / 12 - r * (1.0 / 360 - r * (1.0 / 1260 - r * (1.0 / 1680 - r / 1188)))) / k
    error = 0.002 * r**5 / k + 4.0 * _EPS * value
    return value, error


def poisson_log_pmf(mu: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log Pois(k; mu) and a bound on its absolute float64 error (broadcasting mu and k).

    ``k log mu - mu - log k!`` cancels: its terms are about k log k while the result is
    O(log k), so its error grows with mu (1e-11 relative at mu = 5e4, 1e-5 at mu = 5e9).  For
    k >= 16 Loader's saddle-point form is used instead,

        log Pois(k; mu) = -stirlerr(k) - bd0(k, mu) - log(2 pi k) / 2,
        bd0(k, mu) = k log(k / mu) + mu - k = mu h(k / mu),

    with bd0 from its series in v = (k - mu) / (k + mu) when |v| < 0.1,
    bd0 = (k - mu) v + 2k sum_{j >= 1} v^(2j+1) / (2j+1) (terms through v^17; the first term
    dominates the rest 15-fold, so the result carries a relative error of at most 16 eps, plus
    the omitted tail), and from ``k log(k / mu) + mu - k`` otherwise (absolute error at most
    4 eps (k (1 + |log(k / mu)|) + mu + k)).  Every term of a Poisson window has bd0 below
    about 42, so in-window log-weights are good to about 700 eps absolute at worst and far
    better typically.  Below 16 the direct form is exact enough (its terms are small there).
    mu = 0 is handled as mu = 1e-300 (pmf 1 at k = 0, 0 elsewhere).
    """
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-300)
    k = np.asarray(k, dtype=np.float64)
    mu, k = np.broadcast_arrays(mu, k)
    log_mu = np.log(mu)
    gam = special.gammaln(k + 1.0)
    direct = k * log_mu - mu - gam
    error = 4.0 * _EPS * (np.abs(k * log_mu) + mu + gam + 1.0)
    big = k >= _STIRLING_FROM
    if big.any():
        kb, mb = k[big], mu[big]
        stirl, stirl_err = _stirling_error(kb)
        v = (kb - mb) / (kb + mb)
        near = np.abs(v) < 0.1
        s = v * v
        series = np.zeros_like(v)
        for c in _BD0_SERIES[::-1]:
            series = series * s + c
        bd0_series = (kb - mb) * v + 2.0 * kb * v * s * series
        with np.errstate(divide="ignore", over="ignore"):
            tail = 2.0 * kb * np.abs(v) ** 19 / (19.0 * (1.0 - s))  # used where |v| < 0.1
            log_ratio = np.log(kb / mb)
        bd0_direct = kb * log_ratio + mb - kb
        bd0 = np.where(near, bd0_series, bd0_direct)
        bd0_err = np.where(
            near,
            16.0 * _EPS * np.abs(bd0_series) + tail,
            4.0 * _EPS * (kb * (1.0 + np.abs(log_ratio)) + mb + kb),
        )
        half_log = 0.5 * np.log(2.0 * np.pi * kb)
        direct[big] = -stirl - bd0 - half_log
        error[big] = stirl_err + bd0_err + 4.0 * _EPS * (half_log + np.abs(bd0) + 1.0)
    return direct, error


def poisson_weights(mu: np.ndarray, start: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """W[j, t] = Pois(start + t; mu_j), shape (n, width), and a bound on each entry's relative
    error (``exp`` of the log-pmf of :func:`poisson_log_pmf`: expm1 of its error bound plus
    two units of ``exp`` rounding).  Entries below the smallest double underflow to 0; they
    lie far outside every window that uses them, and their true value is below 1e-300."""
    k = start + np.arange(width, dtype=np.float64)
    log_pmf, log_err = poisson_log_pmf(np.asarray(mu, dtype=np.float64)[:, None], k[None, :])
    return np.exp(log_pmf), np.expm1(log_err) + 2.0 * _EPS


@dataclass(frozen=True)
class MixtureCdf:
    """Truncated Poisson-mixture CDFs: the true CDF lies in [cdf - error, cdf + tail + error]."""

    cdf: np.ndarray  # (n, columns)
    tail: np.ndarray  # (n,) Poisson mass outside each point's window (Chernoff bound)
    error: np.ndarray  # (n,) float64 error bound of every computed CDF value of the point


def _mixture_error(
    weights: np.ndarray, rel: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Bound on |computed - exact| of sum_t w_t G_t for each row of ``weights`` (n, terms).

    Three parts: the weights' relative errors r_t (:func:`poisson_weights`) give sum_t w_t r_t;
    the table's absolute error ``_GAMMAINC_ABS_ERROR`` gives that times sum_t w_t; the dot
    product, in whatever order BLAS sums it: an addition a + b rounds by at most
    eps |a + b| and at most min(|a|, |b|) (the larger operand is itself a float).  At most
    m - 1 additions join two partial sums that both hold terms of the point's own window
    [lo, hi] (m terms), each off by at most eps S (S = sum_t w_t G_t <= sum_t w_t); every
    other addition has an operand made of outside terms only, off by at most their sum
    S_out.  So the dot product is off by at most (m - 1) eps S + (terms - 1) S_out, S_out being
    tiny (the outside weights are within the window's Chernoff tail).  The result is scaled by
    1 + 1e-6 for the rounding of the bound itself and of the computed weights against the
    exact ones (r_t < 1e-6).
    """
    t = np.arange(weights.shape[1])
    inside = (t[None, :] >= lo[:, None]) & (t[None, :] <= hi[:, None])
    total = weights.sum(axis=1)
    outside = np.where(inside, 0.0, weights).sum(axis=1)
    own = (hi - lo).astype(np.float64)  # m - 1
    dot = own * _EPS * total + (weights.shape[1] - 1) * outside
    per_weight = np.einsum("jt,jt->j", weights, rel) + _GAMMAINC_ABS_ERROR * total
    return (1.0 + 1e-6) * (per_weight + dot)


def noncentral_chi2_cdf(
    lam: np.ndarray, table: ChiSquareTable, columns: np.ndarray | slice, *, block: int = 256
) -> MixtureCdf:
    """F_{d, lam_j}(edges[c] / sigma^2) for every point j and edge column c (eq. 70).

    ``cdf`` is the truncated mixture, the exact CDF of the squared distance with the Poisson
    mass outside a window moved to +infinity; ``tail`` bounds that mass.  Points are sorted by
    window and processed in blocks, one dense matrix product per block over the union of the
    block's windows (which only adds terms of the series).

    ``error`` bounds the float64 error of each computed value of a point (:func:`_mixture_error`).
    """
    lam = np.asarray(lam, dtype=np.float64)
    window = poisson_windows(lam)
    out = np.empty((lam.size, table.scaled_edges[columns].size))
    error = np.zeros(lam.size)
    if lam.size == 0:
        return MixtureCdf(out, window.tail, error)
    grid = table.rows(int(window.hi.max()) + 1)
    order = np.argsort(window.lo, kind="stable")
    mu = 0.5 * lam
    for s in range(0, lam.size, block):
        idx = order[s : s + block]
        start, stop = int(window.lo[idx].min()), int(window.hi[idx].max()) + 1
        weights, rel = poisson_weights(mu[idx], start, stop - start)
        out[idx] = weights @ grid[start:stop, columns]
        error[idx] = _mixture_error(weights, rel, window.lo[idx] - start, window.hi[idx] - start)
    return MixtureCdf(out, window.tail, error)


def cdf_bounds(
    lam: np.ndarray, table: ChiSquareTable, *, max_terms: int = 1 << 10
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds (n, L - 1) on F_{d, lam_j} at every edge.

    The Poisson mixture where its window needs at most ``max_terms`` table rows (widened by its
    window tail and float error bound), the closed-form Chernoff bounds elsewhere.
    """
    lam = np.asarray(lam, dtype=np.float64)
    lower, upper = ncx2_cdf_bounds(table.scaled_edges[None, :], table.dim, lam[:, None])
    window = poisson_windows(lam)
    mixture = np.flatnonzero(window.hi < max_terms)
    if mixture.size:
        mix = noncentral_chi2_cdf(lam[mixture], table, slice(None))
        err = mix.error[:, None]
        lower[mixture] = np.clip(mix.cdf - err, 0.0, 1.0)
        upper[mixture] = np.clip(mix.cdf + mix.tail[:, None] + err, 0.0, 1.0)
    return lower, upper


def ncx2_cdf_bounds(x: np.ndarray, dim: int, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form Chernoff bounds (lower, upper) on F_{d, lam}(x), broadcasting x and lam.

    With Z ~ ncx2(d, lam), E exp(tZ) = exp(lam t / (1 - 2t)) (1 - 2t)^(-d/2).  Optimising
    P(Z <= x) <= exp(s x) E exp(-sZ) over s > 0 and P(Z >= x) <= exp(-s x) E exp(sZ) over
    0 < s < 1/2 gives, with u = (d + sqrt(d^2 + 4 x lam)) / (2x) (u = 1 +- 2s),
    exponent = x (u - 1) / 2 - lam (u - 1) / (2u) - (d / 2) log u, valid on the side of the mean
    d + lam where the bound is below 1 (0 and 1 elsewhere, which are trivially valid).  Used to
    choose the levels and points to compute and to bound the mass of skipped points.
    """
    x = np.asarray(x, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    d = float(dim)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        xp = np.maximum(x, 1e-300)
        u = (d + np.sqrt(d * d + 4.0 * xp * lam)) / (2.0 * xp)
        exponent = 0.5 * xp * (u - 1.0) - 0.5 * lam * (u - 1.0) / u - 0.5 * d * np.log(u)
        bound = np.exp(np.minimum(exponent, 0.0))
    below_mean = x < d + lam
    upper = np.where(x <= 0.0, 0.0, np.where(below_mean, bound, 1.0))
    lower = np.where(below_mean, 0.0, 1.0 - bound)
    return lower, upper


_TABLES: dict[tuple[int, float, bytes], ChiSquareTable] = {}


def chi_square_table(dim: int, sigma: float, edges: np.ndarray) -> ChiSquareTable:
    """The shared table of one (d, sigma, edges), kept for reuse by later calls (last 4)."""
    key = (int(dim), float(sigma), np.asarray(edges, dtype=np.float64).tobytes())
    if key not in _TABLES:
        while len(_TABLES) >= 4:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = ChiSquareTable(dim, sigma, edges)
    return _TABLES[key]
