"""Input checks shared by the certification modules; each raises ValueError naming the problem."""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike


def _finite_float_array(x: ArrayLike, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {x!r}") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return arr


def check_alpha(alpha: float) -> float:
    """Return alpha as a float after checking 0 < alpha < 1."""
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool):
        raise ValueError(f"alpha must be a real number in (0, 1), got {alpha!r}")
    value = float(alpha)
    if not 0.0 < value < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {value}")
    return value


def check_positive_scalar(x: float, name: str, *, allow_zero: bool = False) -> float:
    """Return x as a float after checking it is a finite number > 0 (>= 0 with allow_zero)."""
    bound = ">= 0" if allow_zero else "> 0"
    if not isinstance(x, numbers.Real) or isinstance(x, bool):
        raise ValueError(f"{name} must be a real number {bound}, got {x!r}")
    value = float(x)
    if not (np.isfinite(value) and (value > 0.0 or (allow_zero and value == 0.0))):
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def check_nonnegative(x: ArrayLike, name: str, *, allow_inf: bool = False) -> np.ndarray:
    """Float64 array of finite values >= 0 (+inf allowed with allow_inf)."""
    if allow_inf:
        arr = np.asarray(x, dtype=np.float64)
        if np.any(np.isnan(arr)):
            raise ValueError(f"{name} must not contain NaN")
    else:
        arr = _finite_float_array(x, name)
    if np.any(arr < 0.0):
        raise ValueError(f"{name} must be >= 0, got minimum {arr.min()}")
    return arr


def check_probability(x: ArrayLike, name: str) -> np.ndarray:
    """Float64 array of values in [0, 1]."""
    arr = _finite_float_array(x, name)
    if np.any((arr < 0.0) | (arr > 1.0)):
        raise ValueError(f"{name} must lie in [0, 1], got values in [{arr.min()}, {arr.max()}]")
    return arr


def check_integers(x: ArrayLike, name: str, *, minimum: int) -> np.ndarray:
    """Int64 array of integral values >= minimum (integral floats such as 3.0 are accepted)."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and (
        not np.all(np.isfinite(arr)) or np.any(arr != np.floor(arr))
    ):
        raise ValueError(f"{name} must hold whole numbers")
    out = arr.astype(np.int64)
    if np.any(out < minimum):
        raise ValueError(f"{name} must be >= {minimum}, got minimum {out.min()}")
    return out


def check_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """Check x has shape (m, C) with m >= 1 rows and C >= 2 classes."""
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (m, C), got shape {x.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must have at least one row")
    if x.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 classes (columns), got {x.shape[1]}")
    return x


def per_row(x: ArrayLike, m: int, name: str) -> np.ndarray:
    """Broadcast a scalar or an (m,) array to shape (m,)."""
    arr = np.asarray(x)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != m):
        raise ValueError(f"{name} must be a scalar or have shape ({m},), got shape {arr.shape}")
    return np.broadcast_to(arr, (m,))


def check_int_scalar(x: int, name: str, *, minimum: int) -> int:
    """Return x as an int after checking it is a single whole number >= minimum."""
    arr = check_integers(x, name, minimum=minimum)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a single integer, got shape {arr.shape}")
    return int(arr)
