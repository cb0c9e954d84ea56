"""The grid of CDF bounds of the level search (rab.knn.bound_grid) against exact comparisons,
scipy's noncentral chi-square and mpmath."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from scipy import stats

from rab.knn.bound_grid import CdfBoundGrid, grid_lambda
from rab.knn.levels import ChiSquareTable, cdf_bounds, default_edges

TINY = 2.0**-40  # the grid's first value above 0


def _awkward_lambdas(rng: np.random.Generator) -> np.ndarray:
    """0, subnormals, the grid's ends, grid values and their float neighbours, octave ends and
    a spread of magnitudes."""
    grid = grid_lambda(np.repeat(np.arange(-41, 12), 64), np.tile(np.arange(64), 53))
    grid = grid[grid > 0]
    special = np.array([0.0, 5e-324, 1e-310, 1e-300, TINY, 2.0**-41, 1.0, 2.0, 1024.0])
    values = np.concatenate([special, grid, 10.0 ** rng.uniform(-15, 4, 2000)])
    return np.unique(np.concatenate([values, np.nextafter(values, 0), np.nextafter(values, 1e300)]))


def test_neighbours_bracket_every_lambda_and_lie_one_step_apart() -> None:
    lam = _awkward_lambdas(np.random.default_rng(0))
    table = ChiSquareTable(57, 1.0, default_edges(57, 1.0, 200, 0.1))
    below, above = CdfBoundGrid(table).neighbours(lam)
    assert np.all(below <= lam) and np.all(lam <= above)
    on_grid = lam >= TINY
    step = 2.0 ** (1 / 64) * (1 + 1e-15)
    assert np.all(above[on_grid] <= below[on_grid] * step)
    assert np.all(below[~on_grid] == 0.0) and np.all(above[(~on_grid) & (lam > 0)] == TINY)
    assert np.all(above[lam == 0] == 0.0)
    exact = np.isin(lam, grid_lambda(np.repeat(np.arange(-40, 12), 64), np.tile(np.arange(64), 52)))
    assert np.all(below[exact] == lam[exact]) and np.all(above[exact] == lam[exact])


@pytest.mark.parametrize("dim", [1, 57, 784])
def test_grid_bounds_bracket_the_noncentral_chi_square(dim: int) -> None:
    """lower(lam) <= F_{d, lam}(edge) <= upper(lam) at every edge, for lambdas read from the
    grid (mixture range) and in closed form, against scipy."""
    rng = np.random.default_rng(dim)
    edges = default_edges(dim, 1.0, 60, 1.0)
    grid = CdfBoundGrid(ChiSquareTable(dim, 1.0, edges))
    lam = np.concatenate([[0.0, 1e-13], 10.0 ** rng.uniform(-6, 4.5, 60)])
    exact = stats.ncx2.cdf(edges[None, :], dim, np.maximum(lam, 1e-300)[:, None])
    lower, upper = grid.lower(lam), grid.upper(lam)
    assert np.all(lower <= exact + 1e-12) and np.all(exact <= upper + 1e-12)
    assert np.all(lower <= upper)


def test_grid_bounds_bracket_high_precision_values() -> None:
    """d = 1, where F_{1, lam}(x) = Phi(sqrt(x) - sqrt(lam)) - Phi(-sqrt(x) - sqrt(lam)) in
    40-digit mpmath: no tolerance."""
    mpmath.mp.dps = 40
    edges = np.linspace(0.05, 30.0, 25)
    grid = CdfBoundGrid(ChiSquareTable(1, 1.0, edges))
    lam = np.array([0.0, 3e-14, 0.37, 2.0, 9.99, 123.4, 700.0])
    lower, upper = grid.lower(lam), grid.upper(lam)
    for i, value in enumerate(lam):
        root = mpmath.sqrt(mpmath.mpf(float(value)))
        for j, x in enumerate(edges):
            r = mpmath.sqrt(mpmath.mpf(float(x)))
            cdf = mpmath.ncdf(r - root) - mpmath.ncdf(-r - root)
            assert lower[i, j] <= cdf <= upper[i, j]


def test_grid_reads_do_not_depend_on_what_came_before() -> None:
    """An octave is always computed from the same 64 lambdas: a grid warmed by other inputs
    reads the same bits as a fresh one."""
    rng = np.random.default_rng(3)
    table = ChiSquareTable(57, 1.0, default_edges(57, 1.0, 200, 0.1))
    lam = 10.0 ** rng.uniform(-3, 3.5, 40)
    warmed = CdfBoundGrid(table)
    warmed.upper(10.0 ** rng.uniform(-8, 3.5, 500))
    warmed.lower(rng.uniform(0, 50, 30))
    fresh = CdfBoundGrid(table)
    assert np.array_equal(fresh.upper(lam), warmed.upper(lam))
    assert np.array_equal(fresh.lower(lam), warmed.lower(lam))


def test_grid_bounds_are_those_of_the_neighbours() -> None:
    """What is read is ``cdf_bounds`` at the neighbouring grid values (mixture range) and at
    lambda itself beyond it."""
    table = ChiSquareTable(57, 1.0, default_edges(57, 1.0, 200, 0.1))
    grid = CdfBoundGrid(table)
    lam = np.array([0.0, 1e-20, 0.3, 17.0, 900.0, 5e4, 3e7])
    below, above = grid.neighbours(lam)
    near = lam < 1e3
    np.testing.assert_allclose(grid.upper(lam)[near], cdf_bounds(below[near], table)[1], atol=1e-15)
    np.testing.assert_allclose(grid.lower(lam)[near], cdf_bounds(above[near], table)[0], atol=1e-15)
    np.testing.assert_array_equal(grid.upper(lam)[~near], cdf_bounds(lam[~near], table)[1])


def test_grid_refuses_negative_and_nan_lambdas() -> None:
    grid = CdfBoundGrid(ChiSquareTable(3, 1.0, np.array([1.0, 2.0])))
    for bad in (-1e-300, np.nan):
        with pytest.raises(ValueError):
            grid.upper(np.array([1.0, bad]))
