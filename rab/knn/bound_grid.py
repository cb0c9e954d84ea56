r"""Bounds on F_{d, lambda}(e_l / sigma^2) at every edge, read from a shared grid of lambdas.

The boundary-level search (``rab.knn.exact.boundary_levels``) needs, per test point and per
bin of its training points' noncentralities, an upper bound on the CDF (eq. 70) at the bin's
smallest lambda and a lower bound at its largest, at every edge.  The CDF decreases in lambda
(the noncentral chi-square is stochastically increasing in its noncentrality), so for any
grid values g <= lambda <= g',

    lower(g') <= F_{d, g'} <= F_{d, lambda} <= F_{d, g} <= upper(g),

and the bounds at a fixed grid, computed once per (d, sigma, edges) and kept with its
chi-square table, bound the CDF at every lambda between.  Only the choice of the computed
level range rests on them (the mass outside it is measured afterwards), so a grid value instead
of the exact lambda moves that range by a level or so (the Chernoff parameters follow the
bounds), never makes a result invalid.

The grid: lambda = 0 and, per octave 2^e (e >= ``_LOWEST_OCTAVE``), the 64 values
m_j 2^e with m_j = 2^(j / 64) rounded to float64; scaling by 2^e is exact, so a lambda's
neighbours are found by exact comparisons of its mantissa (``np.frexp``), no logarithm.
Neighbours are 1.1 % apart.  An octave's bounds are computed together, always from the same
64 lambdas, so what is read never depends on which inputs came before.  Lambdas whose
Poisson window exceeds the mixture's term limit get the closed-form bounds at their own value,
as :func:`rab.knn.levels.cdf_bounds` would give them.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from rab.knn.levels import MIXTURE_BOUND_TERMS, ChiSquareTable, cdf_bounds, poisson_windows

_STEPS_PER_OCTAVE = 64
# Below 2^-40 the lower neighbour is lambda = 0 (such points coincide with the input).
_LOWEST_OCTAVE = -40
# m_j = 2^(j / 64), j = 0 .. 64 (m_64 = 2 exactly: the next octave's first value).
_MANTISSAS = np.exp2(np.arange(_STEPS_PER_OCTAVE + 1) / _STEPS_PER_OCTAVE)
_MANTISSAS[0], _MANTISSAS[-1] = 1.0, 2.0


class CdfBoundGrid:
    """Lower and upper CDF bounds at every edge of ``table`` for grid lambdas, computed one
    octave at a time on first use and kept (2 x 64 x edges float64 values per octave)."""

    def __init__(self, table: ChiSquareTable) -> None:
        self.table = table
        self._octaves: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._zero = cdf_bounds(np.zeros(1), table)
        self._lock = threading.Lock()

    def upper(self, lam: np.ndarray) -> np.ndarray:
        """(n, edges) upper bounds on F_{d, lam_j} at every edge (the grid value <= lam_j)."""
        return self._bounds(np.asarray(lam, dtype=np.float64), upper=True)

    def lower(self, lam: np.ndarray) -> np.ndarray:
        """(n, edges) lower bounds on F_{d, lam_j} at every edge (the grid value >= lam_j)."""
        return self._bounds(np.asarray(lam, dtype=np.float64), upper=False)

    def neighbours(self, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The grid values g <= lam and g' >= lam whose bounds :meth:`upper` and :meth:`lower`
        read (for lambdas in the mixture's range)."""
        lam = np.asarray(lam, dtype=np.float64)
        below, above = _neighbour(lam, upper=True), _neighbour(lam, upper=False)
        return grid_lambda(*below), grid_lambda(*above)

    def _bounds(self, lam: np.ndarray, *, upper: bool) -> np.ndarray:
        if np.any(~(lam >= 0.0)):
            raise ValueError("noncentralities must be >= 0")
        out = np.empty((lam.size, self.table.scaled_edges.size))
        closed = poisson_windows(lam).hi >= MIXTURE_BOUND_TERMS
        if closed.any():  # cdf_bounds gives them its closed form, at their own lambda
            out[closed] = cdf_bounds(lam[closed], self.table)[1 if upper else 0]
        octave, step = _neighbour(lam[~closed], upper=upper)
        rows = np.flatnonzero(~closed)
        for e in np.unique(octave):
            at = octave == e
            out[rows[at]] = self._octave(int(e))[1 if upper else 0][step[at]]
        return out

    def _octave(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper), each (64, edges), at m_j 2^e (at 0 for e below the grid)."""
        if e < _LOWEST_OCTAVE:
            return self._zero
        with self._lock:
            if e not in self._octaves:
                grid = grid_lambda(np.full(_STEPS_PER_OCTAVE, e), np.arange(_STEPS_PER_OCTAVE))
                self._octaves[e] = cdf_bounds(grid, self.table)
            return self._octaves[e]


def _neighbour(lam: np.ndarray, *, upper: bool) -> tuple[np.ndarray, np.ndarray]:
    """(octave, step) of the largest grid value <= lam (upper) or the smallest >= lam;
    octave ``_LOWEST_OCTAVE - 1`` stands for lambda = 0."""
    fraction, exponent = np.frexp(lam)  # lam = (2 fraction) 2^(exponent - 1)
    mantissa, octave = 2.0 * fraction, exponent.astype(np.int64) - 1
    if upper:  # m_step <= mantissa < m_(step + 1)
        step = np.searchsorted(_MANTISSAS, mantissa, side="right") - 1
    else:  # m_(step - 1) < mantissa <= m_step
        step = np.searchsorted(_MANTISSAS, mantissa, side="left")
    wrap = step == _STEPS_PER_OCTAVE
    octave, step = np.where(wrap, octave + 1, octave), np.where(wrap, 0, step)
    below = (lam == 0.0) | (octave < _LOWEST_OCTAVE)
    if upper:  # the lower neighbour of a tiny lambda is 0
        octave, step = np.where(below, _LOWEST_OCTAVE - 1, octave), np.where(below, 0, step)
    else:  # its upper neighbour is the grid's first value (0 for 0 itself)
        zero = lam == 0.0
        octave = np.where(zero, _LOWEST_OCTAVE - 1, np.where(below, _LOWEST_OCTAVE, octave))
        step = np.where(below, 0, step)
    return octave, step


def grid_lambda(octave: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The grid value m_step 2^octave (exact), 0 for octaves below the grid."""
    octave, step = np.asarray(octave), np.asarray(step)
    value = np.ldexp(_MANTISSAS[step], np.maximum(octave, _LOWEST_OCTAVE))
    return np.where(octave < _LOWEST_OCTAVE, 0.0, value)


_GRIDS: weakref.WeakKeyDictionary[ChiSquareTable, CdfBoundGrid] = weakref.WeakKeyDictionary()
_GRIDS_LOCK = threading.Lock()


def bound_grid(table: ChiSquareTable) -> CdfBoundGrid:
    """The grid kept with ``table`` (as long as the table is: ``chi_square_table`` keeps the
    last four)."""
    with _GRIDS_LOCK:
        if table not in _GRIDS:
            _GRIDS[table] = CdfBoundGrid(table)
        return _GRIDS[table]
