"""Preprocessing: a fixed feature transform declared before any data is seen.

RAB certifies ``sqrt(sum_i ||delta_i||_2^2) < R`` (eq. 14) in the space the classifier is trained
in, i.e. *after* preprocessing. The guarantee requires the whole pipeline, preprocessing included,
to be one fixed function of the (possibly poisoned) training set plus noise. A transform *fitted*
on the training set being certified (for example standardising with its own mean and standard
deviation) is itself changed by the poison, so the radius would no longer bound what an attacker
can do and the certificate is void. Therefore the only transforms offered here are:

* :data:`PIXELS` (and :func:`pixels`): ``x / max_value`` (``x / 255`` for 8-bit images) into [0, 1];
* :data:`RAW`: features unchanged;
* :func:`affine`: ``(x - offset) / scale`` per feature, with numbers the user supplies;
* :func:`fit_on_reference`: the same affine map, computed on a *clean reference set that the user
  names* (never the training set being certified); :meth:`Preprocessing.check_not_fitted_on`
  refuses the most common mistake, fitting on exactly that training set.

A radius is only meaningful together with the preprocessing that defines its space: the loaders
record :meth:`Preprocessing.describe` in ``Dataset.meta["preprocessing"]``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "PIXELS",
    "RAW",
    "Preprocessing",
    "affine",
    "fit_on_reference",
    "pixels",
]


def _digest(X: np.ndarray) -> str:
    a = np.ascontiguousarray(X, dtype=np.float64)
    return hashlib.sha256(f"{a.shape}".encode() + a.tobytes()).hexdigest()


@dataclass(frozen=True, eq=False)
class Preprocessing:
    """A fixed map applied feature-wise to every sample (train and test alike).

    ``kind`` is ``"pixels"`` (divide by ``max_value``, values must lie in ``[0, max_value]``),
    ``"raw"`` (identity) or ``"affine"`` (``(x - offset) / scale``; ``offset`` and ``scale``
    broadcast against one sample). ``reference`` names the clean set an affine map was computed
    on, and ``reference_sha256`` is that set's hash (see :meth:`check_not_fitted_on`).
    """

    kind: Literal["pixels", "raw", "affine"]
    max_value: float = 255.0
    offset: np.ndarray | None = None
    scale: np.ndarray | None = None
    reference: str | None = None
    reference_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("pixels", "raw", "affine"):
            raise ValueError(f"unknown preprocessing kind {self.kind!r}")
        if self.kind == "pixels" and not (math.isfinite(self.max_value) and self.max_value > 0):
            raise ValueError(f"pixel max_value must be positive and finite, got {self.max_value}")
        if self.kind == "affine":
            if self.offset is None or self.scale is None:
                raise ValueError("affine preprocessing needs both offset and scale")
            offset = np.array(self.offset, dtype=np.float64)
            scale = np.array(self.scale, dtype=np.float64)
            if not (np.isfinite(offset).all() and np.isfinite(scale).all()):
                raise ValueError("affine offset and scale must be finite")
            if (scale <= 0).any():
                raise ValueError("affine scale must be strictly positive for every feature")
            for a in (offset, scale):
                a.setflags(write=False)
            object.__setattr__(self, "offset", offset)
            object.__setattr__(self, "scale", scale)

    @property
    def feature_range(self) -> tuple[float, float] | None:
        """The range outputs are guaranteed to lie in: ``(0, 1)`` for pixels, else ``None``."""
        return (0.0, 1.0) if self.kind == "pixels" else None

    def __call__(self, X: npt.ArrayLike) -> np.ndarray:
        """Apply the map; returns ``float32`` of the same shape.

        Raises ``ValueError`` if pixel values fall outside ``[0, max_value]`` or an affine map's
        ``offset``/``scale`` do not broadcast against one sample.
        """
        arr = np.asarray(X)
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"features must be numeric, got dtype {arr.dtype}")
        if self.kind == "raw":
            return arr.astype(np.float32)
        if self.kind == "pixels":
            if arr.size and (arr.min() < 0 or arr.max() > self.max_value):
                raise ValueError(
                    f"pixel values must lie in [0, {self.max_value:g}], "
                    f"got [{arr.min():g}, {arr.max():g}]"
                )
            # float32 division is correctly rounded: for the integers 0..255 it equals
            # float64 division rounded to float32, without a float64 copy of the images.
            return arr.astype(np.float32) / np.float32(self.max_value)
        x = arr.astype(np.float64)
        assert self.offset is not None and self.scale is not None
        try:
            out = (x - self.offset) / self.scale
        except ValueError as exc:
            raise ValueError(
                f"affine offset/scale of shape {self.offset.shape} do not broadcast against "
                f"features of shape {x.shape[1:]}"
            ) from exc
        if out.shape != x.shape:
            raise ValueError(
                f"affine offset/scale of shape {self.offset.shape} change the feature shape "
                f"{x.shape[1:]}"
            )
        return out.astype(np.float32)

    def check_not_fitted_on(self, X_train_raw: np.ndarray) -> None:
        """Raise ``ValueError`` if this map was computed on exactly ``X_train_raw``.

        Fitting on the training set being certified voids the guarantee (module docstring).
        Only an exact match is detectable; a reference set that overlaps the training set is the
        caller's responsibility.
        """
        if self.reference_sha256 is not None and self.reference_sha256 == _digest(X_train_raw):
            raise ValueError(
                f"preprocessing was fitted on the training set being certified "
                f"(reference {self.reference!r}); a transform fitted on possibly poisoned data "
                "voids the certificate. Fit it on a separate clean reference set."
            )

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description, recorded in ``Dataset.meta["preprocessing"]``."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "pixels":
            out["max_value"] = self.max_value
        if self.kind == "affine":
            assert self.offset is not None and self.scale is not None
            out.update(
                offset=self.offset.tolist(),
                scale=self.scale.tolist(),
                reference=self.reference,
                reference_sha256=self.reference_sha256,
            )
        return out


def pixels(max_value: float = 255.0) -> Preprocessing:
    """``x / max_value``: 8-bit images use 255, scikit-learn's digits use 16."""
    return Preprocessing("pixels", max_value=float(max_value))


PIXELS = pixels(255.0)
RAW = Preprocessing("raw")


def affine(offset: npt.ArrayLike, scale: npt.ArrayLike) -> Preprocessing:
    """``(x - offset) / scale`` with user-supplied numbers (per feature, or scalars)."""
    return Preprocessing(
        "affine",
        offset=np.asarray(offset, dtype=np.float64),
        scale=np.asarray(scale, dtype=np.float64),
    )


def fit_on_reference(
    X_reference: npt.ArrayLike,
    *,
    reference: str,
    method: Literal["standardize", "minmax"] = "standardize",
) -> Preprocessing:
    """An affine map computed on a clean reference set named by the caller.

    ``"standardize"``: offset = mean, scale = standard deviation; ``"minmax"``: offset = min,
    scale = max - min (per feature, over axis 0). Constant features get scale 1.

    Never pass the training set that will be certified (see the module docstring): the
    returned map remembers the reference set's hash, and the loaders call
    :meth:`Preprocessing.check_not_fitted_on` with the raw training features.
    """
    X = np.asarray(X_reference, dtype=np.float64)
    if X.ndim < 2 or X.shape[0] < 2:
        raise ValueError(f"reference set must have shape (samples >= 2, *features), got {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("reference set contains NaN or inf")
    if not reference:
        raise ValueError("name the clean reference set (reference=...)")
    if method == "standardize":
        offset, scale = X.mean(axis=0), X.std(axis=0)
    elif method == "minmax":
        offset, scale = X.min(axis=0), X.max(axis=0) - X.min(axis=0)
    else:
        raise ValueError(f"unknown method {method!r}; use 'standardize' or 'minmax'")
    scale = np.where(scale > 0, scale, 1.0)
    return Preprocessing(
        "affine", offset=offset, scale=scale, reference=reference, reference_sha256=_digest(X)
    )
