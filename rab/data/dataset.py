"""The in-memory dataset type shared by the whole library, and its validation.

A :class:`Dataset` holds a train/test split of *preprocessed* features. RAB's certified radius
(eq. 14, ``sqrt(sum_i ||delta_i||^2) < sigma/2 (Phi^-1(p_A) - Phi^-1(p_B))``) is an L2 distance in
exactly this feature space, so the preprocessing that produced it must be a fixed function chosen
before looking at the (possibly poisoned) training set; see :mod:`rab.data.preprocess`.

Features are stored as ``float32`` and labels as ``int64`` in ``0..C-1``. Instances are frozen and
their arrays are read-only copies, so a dataset's :attr:`Dataset.sha256` cannot go stale.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["Dataset", "as_int_labels", "freeze_meta"]


def as_int_labels(y: object, *, what: str = "labels") -> np.ndarray:
    """Return ``y`` as a 1-D ``int64`` array, or raise ``ValueError`` naming the problem.

    Integer arrays pass; floating-point arrays pass only when every value is integral (as read from
    CSV or text); anything else (strings, objects, fractions, NaN) is rejected.
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise ValueError(f"{what} must be integers; found {arr[bad]} at index {bad}")
        frac = arr != np.round(arr)
        if frac.any():
            bad = int(np.flatnonzero(frac)[0])
            raise ValueError(f"{what} must be integers; found {arr[bad]} at index {bad}")
        return arr.astype(np.int64)
    raise ValueError(f"{what} must be integers, got dtype {arr.dtype}")


def freeze_meta(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of ``meta`` whose values must be JSON-serialisable (checked here)."""
    try:
        json.dumps(dict(meta), sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"dataset meta must be JSON-serialisable: {exc}") from exc
    return MappingProxyType(json.loads(json.dumps(dict(meta))))


def _owned_readonly(a: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """A fresh C-contiguous copy of ``a`` in ``dtype``, marked read-only."""
    out: np.ndarray = np.array(a, dtype=dtype, order="C", copy=True)
    out.setflags(write=False)
    return out


def _check_features(X: object, input_shape: tuple[int, ...], split: str) -> np.ndarray:
    arr = np.asarray(X)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"X_{split} must be numeric, got dtype {arr.dtype}")
    expected_rank = 1 + len(input_shape)
    if arr.ndim != expected_rank:
        raise ValueError(
            f"X_{split} must have rank {expected_rank} (samples, *{input_shape}), "
            f"got rank {arr.ndim} with shape {arr.shape}"
        )
    if tuple(arr.shape[1:]) != input_shape:
        raise ValueError(
            f"X_{split} has per-sample shape {tuple(arr.shape[1:])}, expected {input_shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"the {split} split is empty (X_{split} has 0 samples)")
    out = _owned_readonly(arr, np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        idx = np.unravel_index(int(np.flatnonzero(bad)[0]), out.shape)
        kind = "NaN" if np.isnan(out[idx]) else "inf"
        raise ValueError(f"X_{split} contains {kind} (first at sample {idx[0]}, index {idx[1:]})")
    return out


@dataclass(frozen=True, eq=False)
class Dataset:
    """A validated, immutable train/test split of preprocessed features.

    Attributes:
        X_train: ``float32``, shape ``(n, *input_shape)``; the space the radius (eq. 14) lives in.
        y_train: ``int64`` labels in ``0..C-1``; every class has at least one training sample.
        X_test: ``float32``, shape ``(m, *input_shape)``.
        y_test: ``int64`` labels in ``0..C-1`` (a class may be absent from the test split).
        input_shape: shape of one input, e.g. ``(1, 28, 28)``, ``(3, 32, 32)``, ``(57,)``.
        feature_range: ``(low, high)`` bounds every feature satisfies (``(0.0, 1.0)`` for
            images), or ``None`` when unbounded (raw tabular features). Triggers clip to it.
        class_names: one name per class; ``C = len(class_names) >= 2``.
        name: a human-readable name (not part of :attr:`sha256`).
        meta: JSON-serialisable provenance (source file, split seed, preprocessing, mapping to
            the original labels, poisoning record); not part of :attr:`sha256`.

    Raises ``ValueError`` naming the problem for wrong ranks or shapes, NaN/inf, non-integer or
    out-of-range labels, a class without training samples, an empty split, mismatched lengths,
    or features outside ``feature_range``.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    feature_range: tuple[float, float] | None
    class_names: tuple[str, ...]
    name: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.input_shape)
        if not shape or any(s <= 0 for s in shape):
            raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {shape}")
        names = tuple(str(c) for c in self.class_names)
        if len(names) < 2:
            raise ValueError(f"need at least 2 classes, got class_names={names}")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names must be unique, got {names}")
        arrays = {}
        for split in ("train", "test"):
            X = _check_features(getattr(self, f"X_{split}"), shape, split)
            y = _owned_readonly(
                as_int_labels(getattr(self, f"y_{split}"), what=f"y_{split}"), np.int64
            )
            if len(y) != len(X):
                raise ValueError(
                    f"X_{split} has {len(X)} samples but y_{split} has {len(y)} labels"
                )
            out = (y < 0) | (y >= len(names))
            if out.any():
                bad = int(np.flatnonzero(out)[0])
                raise ValueError(
                    f"y_{split} has label {y[bad]} at index {bad}, outside 0..{len(names) - 1}"
                )
            arrays[f"X_{split}"], arrays[f"y_{split}"] = X, y
        empty = np.flatnonzero(np.bincount(arrays["y_train"], minlength=len(names)) == 0)
        if empty.size:
            raise ValueError(
                "classes with no training samples: "
                + ", ".join(f"{int(c)} ({names[c]!r})" for c in empty)
            )
        rng = self._check_range(arrays)
        for key, value in arrays.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "feature_range", rng)
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "meta", freeze_meta(self.meta))

    def _check_range(self, arrays: dict[str, np.ndarray]) -> tuple[float, float] | None:
        if self.feature_range is None:
            return None
        lo, hi = (float(v) for v in self.feature_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"feature_range must be finite with low < high, got {(lo, hi)}")
        for split in ("train", "test"):
            X = arrays[f"X_{split}"]
            if X.min() < lo or X.max() > hi:
                raise ValueError(
                    f"X_{split} has values in [{X.min()}, {X.max()}], outside the declared "
                    f"feature_range {(lo, hi)}"
                )
        return (lo, hi)

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return len(self.class_names)

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the content: every array's dtype, shape and bytes, ``input_shape``,
        ``class_names`` and ``feature_range`` (not ``name`` or ``meta``)."""
        h = hashlib.sha256()
        header = {
            "input_shape": list(self.input_shape),
            "class_names": list(self.class_names),
            "feature_range": None if self.feature_range is None else list(self.feature_range),
        }
        h.update(json.dumps(header, sort_keys=True).encode())
        for key in ("X_train", "y_train", "X_test", "y_test"):
            a: np.ndarray = getattr(self, key)
            h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def with_meta(self, **entries: Any) -> Mapping[str, Any]:
        """``meta`` extended with ``entries`` (for building derived datasets)."""
        return {**self.meta, **entries}

    def summary(self) -> dict[str, Any]:
        """Sizes, per-class counts and hash, JSON-serialisable."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "input_shape": list(self.input_shape),
            "feature_range": self.feature_range,
            "class_names": list(self.class_names),
            "train_size": len(self.y_train),
            "test_size": len(self.y_test),
            "train_class_counts": _counts(self.y_train, self.num_classes),
            "test_class_counts": _counts(self.y_test, self.num_classes),
        }


def _counts(y: np.ndarray, num_classes: int) -> list[int]:
    return [int(c) for c in np.bincount(y, minlength=num_classes)]
