"""Build a :class:`~rab.data.dataset.Dataset` from raw arrays: layout, labels, preprocessing.

Every loader ends here, so the rules are the same for all formats:

* images become channel-first ``(n, C, H, W)``; a channel-last array (``(n, H, W, C)``, as in
  ``../shared/data`` and CIFAR) is transposed, a grayscale ``(n, H, W)`` gets a channel axis;
* labels must be non-negative integers; with ``class_names`` they must index it;
* ``classes`` picks and orders the kept classes (``classes[k]`` becomes label ``k``); by default
  every label seen in the training split is kept in ascending order, and a test label absent from
  training is an error; ``meta["original_labels"]`` keeps the mapping;
* the fixed :class:`~rab.data.preprocess.Preprocessing` is applied to both splits (after refusing a
  map fitted on this very training set) and recorded in ``meta["preprocessing"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rab.data.classes import relabel
from rab.data.dataset import Dataset, as_int_labels
from rab.data.preprocess import RAW, Preprocessing

__all__ = ["Layout", "from_arrays", "to_channel_first"]

Layout = Literal["auto", "channels_first", "channels_last", "flat"]
_CHANNELS = (1, 3)


def to_channel_first(X: npt.ArrayLike, layout: Layout = "auto") -> np.ndarray:
    """Return samples as ``(n, *input_shape)`` with images channel-first.

    ``"auto"``: rank 2 is tabular, rank 3 is grayscale ``(n, H, W)``, rank 4 is channel-last when
    the last axis has 1 or 3 entries and axis 1 does not, channel-first in the mirror case, and an
    error when it cannot tell.
    """
    arr = np.asarray(X)
    if arr.ndim < 2:
        raise ValueError(f"features must have a sample axis plus features, got shape {arr.shape}")
    if layout == "flat":
        if arr.ndim != 2:
            raise ValueError(f"layout='flat' needs rank 2 (samples, features), got {arr.shape}")
        return arr
    if layout == "auto":
        if arr.ndim == 2:
            return arr
        if arr.ndim == 3:
            return arr[:, None]
        if arr.ndim != 4:
            raise ValueError(f"features of rank {arr.ndim} (shape {arr.shape}) are not supported")
        first, last = arr.shape[1] in _CHANNELS, arr.shape[-1] in _CHANNELS
        if first == last:
            raise ValueError(
                f"cannot tell the channel axis of image array {arr.shape}; "
                "pass layout='channels_first' or 'channels_last'"
            )
        layout = "channels_first" if first else "channels_last"
    if arr.ndim != 4:
        raise ValueError(f"layout={layout!r} needs rank 4 images, got shape {arr.shape}")
    return arr if layout == "channels_first" else np.moveaxis(arr, -1, 1)


def _labels(y: object, split: str, class_names: Sequence[str] | None) -> np.ndarray:
    labels = as_int_labels(y, what=f"y_{split}")
    if labels.size and labels.min() < 0:
        bad = int(np.flatnonzero(labels < 0)[0])
        raise ValueError(f"y_{split} has negative label {labels[bad]} at index {bad}")
    if class_names is not None and labels.size and labels.max() >= len(class_names):
        bad = int(np.flatnonzero(labels >= len(class_names))[0])
        raise ValueError(
            f"y_{split} has label {labels[bad]} at index {bad}, outside "
            f"0..{len(class_names) - 1} ({len(class_names)} class names)"
        )
    return labels


def from_arrays(
    X_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    X_test: npt.ArrayLike,
    y_test: npt.ArrayLike,
    *,
    name: str,
    class_names: Sequence[str] | None = None,
    classes: Sequence[int] | None = None,
    preprocessing: Preprocessing = RAW,
    feature_range: tuple[float, float] | None = None,
    layout: Layout = "auto",
    meta: Mapping[str, Any] | None = None,
) -> Dataset:
    """A validated dataset from raw arrays (see the module docstring for the rules).

    ``class_names[label]`` names the original labels (default: the label as a string).
    ``feature_range`` defaults to the preprocessing's output range (``(0, 1)`` for pixels).
    """
    Xtr, Xte = to_channel_first(X_train, layout), to_channel_first(X_test, layout)
    ytr = _labels(y_train, "train", class_names)
    yte = _labels(y_test, "test", class_names)
    if len(Xtr) != len(ytr) or len(Xte) != len(yte):
        raise ValueError(
            f"mismatched lengths: X_train {len(Xtr)} / y_train {len(ytr)}, "
            f"X_test {len(Xte)} / y_test {len(yte)}"
        )
    if classes is None:
        chosen = [int(c) for c in np.unique(ytr)]
        if len(chosen) < 2:
            raise ValueError(f"the training split has fewer than two classes (labels {chosen})")
        unseen = sorted(set(np.unique(yte).tolist()) - set(chosen))
        if unseen:
            raise ValueError(f"test labels {unseen} have no training samples")
    else:
        chosen = [int(c) for c in classes]
    limit = len(class_names) if class_names is not None else None
    keep_tr, ytr_new = relabel(ytr, chosen, num_classes=limit)
    keep_te, yte_new = relabel(yte, chosen, num_classes=limit)
    preprocessing.check_not_fitted_on(Xtr)
    names = tuple(class_names[c] if class_names is not None else str(c) for c in chosen)
    record = {
        **(meta or {}),
        "preprocessing": preprocessing.describe(),
        "original_labels": chosen,
    }
    return Dataset(
        X_train=preprocessing(Xtr[keep_tr]),
        y_train=ytr_new,
        X_test=preprocessing(Xte[keep_te]),
        y_test=yte_new,
        input_shape=tuple(Xtr.shape[1:]),
        feature_range=feature_range if feature_range is not None else preprocessing.feature_range,
        class_names=names,
        name=name,
        meta=record,
    )
