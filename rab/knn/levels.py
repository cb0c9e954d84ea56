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

import functools
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
    check_noncentrality(int(dim), s, spread)
    authors = rule == "authors"
    lo, hi = _edge_range(int(dim), s, spread, authors)
    return np.linspace(lo, hi, int(num_levels) if authors else int(num_levels) - 1)


@functools.lru_cache(maxsize=64)
def _edge_range(dim: int, sigma: float, spread: float, authors: bool) -> tuple[float, float]:
    """The lowest and highest edge of :func:`default_edges` (scipy's quantiles cost about
    0.5 ms, once per configuration here)."""
    lo = sigma**2 * stats.chi2.ppf(1e-4, dim * spread if authors else dim)
    hi = sigma**2 * stats.ncx2.isf(1e-4, dim, dim * spread / sigma**2)
    return float(lo), float(hi)


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


def max_mixture_terms(num_edges: int) -> int:
    """The most Poisson terms a chi-square table over ``num_edges`` edges may hold (its size
    is bounded by ``_MAX_TABLE_BYTES``)."""
    return _MAX_TABLE_BYTES // (8 * max(1, int(num_edges)))


#: The largest noncentrality d * spread / sigma^2 of the edges' reference point accepted: the
#: top edge is a noncentral chi-square quantile whose cost grows with its square root (0.35 s
#: at 1e12 here, 36 s at 1e16), so a sigma far below the data's scale is refused up front.
MAX_NONCENTRALITY = 1e12


def check_noncentrality(dim: int, sigma: float, spread: float) -> None:
    """ValueError when d * spread / sigma^2 exceeds :data:`MAX_NONCENTRALITY` (cheap: it runs
    before any special function, so a service can refuse such a sigma at once)."""
    try:
        lam = dim * spread / float(sigma) ** 2
    except (OverflowError, ZeroDivisionError):
        lam = math.inf
    if not lam <= MAX_NONCENTRALITY:
        raise ValueError(
            f"sigma={sigma:g} is too small for {dim} features at spread {spread:g}: the "
            f"noncentrality d * spread / sigma^2 = {lam:.3g} exceeds {MAX_NONCENTRALITY:g}"
        )


class ChiSquareTable:
    """G[k, l] = chi2.cdf(edges[l] / sigma^2; d + 2k), grown on demand and shared by all points."""

    def __init__(self, dim: int, sigma: float, edges: np.ndarray) -> None:
        self.dim = int(dim)
        self.scaled_edges = check_edges(edges) / check_positive_scalar(sigma, "sigma") ** 2
        self.table = np.empty((0, self.scaled_edges.size))

    def rows(self, stop: int) -> np.ndarray:
        """The table for Poisson indices 0..stop-1 (computed with scipy's gammainc)."""
        limit = max_mixture_terms(self.scaled_edges.size)
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
# Stirling's error term log(k!) - (k + 1/2) log k + k - log(2 pi) / 2 for k = 1..15 (40-digit
# mpmath values rounded to float64); from 16 on its asymptotic series (Loader 2000).
_STIRLING_TABLE = np.array([
    0.0,  # unused (k = 0 has its own formula)
    0.08106146679532726, 0.0413406959554093, 0.02767792568499834, 0.020790672103765093,
    0.016644691189821193, 0.013876128823070748, 0.01189670994589177, 0.010411265261972096,
    0.009255462182712733, 0.00833056343336287, 0.007573675487951841, 0.00694284010720953,
    0.006408994188004207, 0.0059513701127588475, 0.005554733551962801,
])  # fmt: skip
# Coefficients 1/3, 1/5, ..., 1/17 of 2 sum_j v^(2j+1) / (2j+1) in the bd0 series, |v| < 0.1.
_BD0_SERIES = 1.0 / np.arange(3.0, 19.0, 2.0)


def _stirling_error(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(k!) - (k + 1/2) log k + k - log(2 pi) / 2 for k >= 1 and an absolute error bound:
    the table below 16, else the asymptotic series through k^-9 (the first omitted term,
    691 / (360360 k^11), is below 1.1e-16), plus rounding."""
    small = k < _STIRLING_TABLE.size
    kb = np.maximum(k, float(_STIRLING_TABLE.size))
    r = 1.0 / (kb * kb)
    series = (1.0 / 12 - r * (1.0 / 360 - r * (1.0 / 1260 - r * (1.0 / 1680 - r / 1188)))) / kb
    table = _STIRLING_TABLE[np.where(small, k, 0).astype(np.int64)]
    value = np.where(small, table, series)
    error = np.where(small, 0.0, 0.002 * r**5 / kb) + 4.0 * _EPS * value
    return value, error


def poisson_log_pmf(mu: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log Pois(k; mu) and a bound on its absolute float64 error (broadcasting mu and k).

    ``k log mu - mu - log k!`` cancels: its terms are about k log k while the result is
    O(log k), so its error grows with mu (1e-10 relative at mu = 5e4, 2e-5 at mu = 5e9).
    Loader's saddle-point form is used instead, for k >= 1,

        log Pois(k; mu) = -stirlerr(k) - bd0(k, mu) - log(2 pi k) / 2,
        bd0(k, mu) = k log(k / mu) + mu - k = mu h(k / mu),

    with bd0 from its series in v = (k - mu) / (k + mu) when |v| < 0.1,
    bd0 = (k - mu) v + 2k sum_{j >= 1} v^(2j+1) / (2j+1) (terms through v^17; the first term
    dominates the rest 15-fold, so the result carries a relative error of at most 16 eps, plus
    the omitted tail), and from ``k log(k / mu) + mu - k`` otherwise (absolute error at most
    4 eps (k (1 + |log(k / mu)|) + mu + k)); log Pois(0; mu) = -mu.  At the mode (where
    :func:`poisson_weights` anchors) bd0 < 1 and the error is a few eps.  mu = 0 is handled as
    mu = 1e-300 (pmf 1 at k = 0, 0 elsewhere).
    """
    mu_b, k_b = np.broadcast_arrays(
        np.maximum(np.asarray(mu, dtype=np.float64), 1e-300), np.asarray(k, dtype=np.float64)
    )
    shape = mu_b.shape
    mu_f, k_f = mu_b.ravel(), np.maximum(k_b.ravel(), 1.0)  # k = 0 is overwritten below
    stirl, stirl_err = _stirling_error(k_f)
    v = (k_f - mu_f) / (k_f + mu_f)
    near = np.abs(v) < 0.1
    s = v * v
    series = np.zeros_like(v)
    for c in _BD0_SERIES[::-1]:
        series = series * s + c
    bd0_series = (k_f - mu_f) * v + 2.0 * k_f * v * s * series
    with np.errstate(divide="ignore", over="ignore"):
        tail = 2.0 * k_f * np.abs(v) ** 19 / (19.0 * (1.0 - s))  # used where |v| < 0.1
        log_ratio = np.log(k_f / mu_f)
    bd0 = np.where(near, bd0_series, k_f * log_ratio + mu_f - k_f)
    bd0_err = np.where(
        near,
        16.0 * _EPS * np.abs(bd0_series) + tail,
        4.0 * _EPS * (k_f * (1.0 + np.abs(log_ratio)) + mu_f + k_f),
    )
    half_log = 0.5 * np.log(2.0 * np.pi * k_f)
    log_pmf = -stirl - bd0 - half_log
    error = stirl_err + bd0_err + 4.0 * _EPS * (half_log + np.abs(bd0) + 1.0)
    zero = k_b.ravel() == 0
    log_pmf[zero], error[zero] = -mu_f[zero], 0.0
    return log_pmf.reshape(shape), error.reshape(shape)


def poisson_weights(
    mu: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    start: int,
    width: int,
    mode_log_pmf: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """W[j, t] = Pois(start + t; mu_j) inside row j's window [lo_j, hi_j], exactly 0 outside;
    shape (n, width), every window inside [start, start + width).  Also returns, per row, a
    bound on sum_t |W[j, t] - exact|.

    One cumulative product per row, C_k = prod_{lo < i <= k} mu / i (each factor one division,
    each step one multiplication), scaled by Pois(m) / C_m at the mode m = floor(mu) (inside
    the window), whose value comes from :func:`poisson_log_pmf` with relative error a.  So the
    entry at k has relative error at most a + (2 (k - lo) + 2 (m - lo) + 2) eps
    (:func:`poisson_weight_rel_error`; first order: the higher-order terms are below 1e-6 of
    it, as the windows are below 1e7 terms wide for mu < 1e10).  Summed with the exact
    weights (total <= 1), sum_t w_t (k - lo) <= E|K - m| + (m - lo) <= sqrt(mu + 1) + (m - lo)
    (E|K - m| <= sqrt(E (K - m)^2) = sqrt(mu + (mu - m)^2)), so the row error is at most
    (1 + 1e-6) (a + (2 sqrt(mu + 1) + 4 (m - lo) + 2) eps).  In-window entries stay far above
    the smallest normal double (the window ends are near 1e-20 of the mode), so the products
    keep their relative precision.  ``mode_log_pmf``: ``poisson_log_pmf(mu, floor(mu))`` if
    already computed.
    """
    mu = np.asarray(mu, dtype=np.float64)
    lo, hi = np.asarray(lo), np.asarray(hi)
    if np.any(lo < start) or np.any(hi >= start + width):
        raise ValueError("every Poisson window must lie inside the computed columns")
    mode = np.floor(mu)
    log_pmf, log_err = poisson_log_pmf(mu, mode) if mode_log_pmf is None else mode_log_pmf
    t = np.arange(width)
    first, last = (lo - start)[:, None], (hi - start)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):  # k = 0 (and mu = 0): set to 1 below
        weights = mu[:, None] / (start + t.astype(np.float64))[None, :]
    np.copyto(weights, 1.0, where=t <= first)
    np.copyto(weights, 0.0, where=t > last)
    np.cumprod(weights, axis=1, out=weights)
    np.copyto(weights, 0.0, where=t < first)
    at_mode = weights[np.arange(mu.size), (mode - start).astype(np.int64)]
    weights *= (np.exp(log_pmf) / at_mode)[:, None]
    return weights, _weight_error(log_err, mu, lo, np.sqrt(mu + 1.0))


def _weight_error(
    log_err: np.ndarray, mu: np.ndarray, lo: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """(1 + 1e-6) (a + (2 steps + 4 (m - lo) + 2) eps) with a = expm1(log_err) + 2 eps, the
    mode's relative error, and steps a bound on |k - m| (:func:`poisson_weights`)."""
    anchor_rel = np.expm1(log_err) + 2.0 * _EPS
    return (1.0 + 1e-6) * (anchor_rel + (2.0 * steps + 4.0 * (np.floor(mu) - lo) + 2.0) * _EPS)


def poisson_weight_rel_error(mu: np.ndarray, lo: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The relative error bound of :func:`poisson_weights`' entry at k (broadcasting)."""
    mu = np.asarray(mu, dtype=np.float64)
    mode = np.floor(mu)
    return _weight_error(poisson_log_pmf(mu, mode)[1], mu, np.asarray(lo), np.abs(k - mode))


@dataclass(frozen=True)
class MixtureCdf:
    """Truncated Poisson-mixture CDFs: the true CDF lies in [cdf - error, cdf + tail + error]."""

    cdf: np.ndarray  # (n, columns)
    tail: np.ndarray  # (n,) Poisson mass outside each point's window (Chernoff bound)
    error: np.ndarray  # (n,) float64 error bound of every computed CDF value of the point


# A block of the Poisson mixture spans at most this many table rows beyond twice its first
# point's own window (a few hundred weights cost about as much as one more block's overhead).
_BLOCK_SPARE_TERMS = 64


def _mixture_blocks(window: PoissonWindow, block: int) -> list[np.ndarray]:
    """Points in window order, cut into runs of at most ``block`` whose union window is at
    most twice the first point's own width plus ``_BLOCK_SPARE_TERMS`` (windows widen with
    lambda, so one block over points of very different lambdas would be mostly zeros).  The
    cut depends only on the points' own windows."""
    order = np.lexsort((window.hi, window.lo))
    lo, hi = window.lo[order], np.maximum.accumulate(window.hi[order])
    blocks, s = [], 0
    while s < order.size:
        limit = lo[s] + 2 * (hi[s] - lo[s] + 1) + _BLOCK_SPARE_TERMS
        e = min(s + block, max(s + 1, int(np.searchsorted(hi, limit, side="right"))))
        blocks.append(order[s:e])
        s = e
    return blocks


def noncentral_chi2_cdf(
    lam: np.ndarray, table: ChiSquareTable, columns: np.ndarray | slice, *, block: int = 256
) -> MixtureCdf:
    """F_{d, lam_j}(edges[c] / sigma^2) for every point j and edge column c (eq. 70).

    ``cdf`` is the truncated mixture, the exact CDF of the squared distance with the Poisson
    mass outside a window moved to +infinity; ``tail`` bounds that mass.  Points are sorted by
    window and processed in blocks of similar windows (:func:`_mixture_blocks`), one dense
    matrix product per block over the union of the block's windows (each point's weights are 0
    outside its own window).

    ``error`` bounds the float64 error of each computed value sum_t w_t G_t of a point: the
    weights' error (:func:`poisson_weights`), the table's absolute error
    ``_GAMMAINC_ABS_ERROR`` times sum_t w_t <= 1, and the dot product, in whatever order BLAS
    sums it: the weights outside the point's window are exactly 0, and adding 0 is exact, so
    at most m - 1 additions round (m terms in the window), each by at most eps times a partial
    sum <= 1 (times 1 + 1e-6 for the rounding of the bound itself).
    """
    lam = np.asarray(lam, dtype=np.float64)
    window = poisson_windows(lam)
    out = np.empty((lam.size, table.scaled_edges[columns].size))
    if lam.size == 0:
        return MixtureCdf(out, window.tail, np.zeros(0))
    grid = table.rows(int(window.hi.max()) + 1)
    mu = 0.5 * lam
    log_pmf, log_err = poisson_log_pmf(mu, np.floor(mu))
    weight_error = np.empty(lam.size)
    for idx in _mixture_blocks(window, block):
        start, stop = int(window.lo[idx].min()), int(window.hi[idx].max()) + 1
        weights, weight_error[idx] = poisson_weights(
            mu[idx],
            window.lo[idx],
            window.hi[idx],
            start,
            stop - start,
            (log_pmf[idx], log_err[idx]),
        )
        out[idx] = weights @ grid[start:stop, columns]
    dot = (window.hi - window.lo).astype(np.float64) * _EPS
    error = (1.0 + 1e-6) * (weight_error + _GAMMAINC_ABS_ERROR + dot)
    return MixtureCdf(out, window.tail, error)


#: The most Poisson terms for which :func:`cdf_bounds` uses the mixture (else closed form).
MIXTURE_BOUND_TERMS = 1 << 10


def cdf_bounds(
    lam: np.ndarray, table: ChiSquareTable, *, max_terms: int = MIXTURE_BOUND_TERMS
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds (n, L - 1) on F_{d, lam_j} at every edge.

    The Poisson mixture where its window needs at most ``max_terms`` table rows (widened by its
    window tail and float error bound), the closed-form Chernoff bounds elsewhere.
    """
    lam = np.asarray(lam, dtype=np.float64)
    window = poisson_windows(lam)
    use_mixture = window.hi < max_terms
    mixture, closed = np.flatnonzero(use_mixture), np.flatnonzero(~use_mixture)
    lower, upper = np.empty((2, lam.size, table.scaled_edges.size))
    if closed.size:
        lower[closed], upper[closed] = ncx2_cdf_bounds(
            table.scaled_edges[None, :], table.dim, lam[closed, None]
        )
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
