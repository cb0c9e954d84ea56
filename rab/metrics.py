"""Evaluation metrics of a certified classifier (paper Table 1, REFERENCE section 1).

For m test points with prediction ``y_hat_i`` (``ABSTAIN`` = -1 never counts as correct),
label ``y_i`` and certified radius ``R_i`` (eq. 14):

- prediction accuracy = mean(y_hat_i == y_i)
- certified rate at R = mean(R_i > R)
- certified accuracy at R = mean(y_hat_i == y_i and R_i > R)

The inequality is strict because eq. 14 certifies patterns of total norm strictly below the radius.

Poison-count certificates (``rab.partition``) state a count r_i of training points that may be
inserted, deleted or changed without changing the prediction, inclusive: certified accuracy at
r = mean(y_hat_i == y_i and r_i >= r) (:func:`count_summary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

DEFAULT_RADII: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0)
#: Poison counts at which count certificates are summarised.
DEFAULT_POISON_COUNTS: tuple[int, ...] = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500)


def _checked(**arrays: ArrayLike) -> list[np.ndarray]:
    """The named arrays flattened (labels and predictions as int64, radii as float64), checked
    to be non-empty and of one length, with no NaN radius."""
    out = [
        np.asarray(a, dtype=np.float64 if name == "radius" else np.int64).reshape(-1)
        for name, a in arrays.items()
    ]
    lengths = {name: a.size for name, a in zip(arrays, out, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{', '.join(lengths)} must have the same length, got {lengths}")
    if out[0].size == 0:
        raise ValueError("metrics need at least one test point")
    if "radius" in arrays and np.isnan(out[list(arrays).index("radius")]).any():
        raise ValueError("radius contains NaN")
    return out


def _above(radius: np.ndarray, radii: Sequence[float]) -> np.ndarray:
    """(len(radii), m) booleans R_i > R (strict: eq. 14 certifies norms below the radius)."""
    return radius[None, :] > np.asarray(radii, dtype=np.float64)[:, None]


def prediction_accuracy(prediction: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of test points whose (non-abstaining) prediction equals the label."""
    pred, lab = _checked(prediction=prediction, labels=labels)
    return float(np.mean(pred == lab))


def certified_rate(radius: ArrayLike, radii: Sequence[float]) -> NDArray[np.float64]:
    """Certified rate at each R in ``radii``: mean(R_i > R)."""
    (rad,) = _checked(radius=radius)
    return _above(rad, radii).mean(axis=1)


def certified_accuracy(
    prediction: ArrayLike, labels: ArrayLike, radius: ArrayLike, radii: Sequence[float]
) -> NDArray[np.float64]:
    """Certified accuracy at each R in ``radii``: mean(y_hat_i == y_i and R_i > R)."""
    pred, lab, rad = _checked(prediction=prediction, labels=labels, radius=radius)
    return (_above(rad, radii) & (pred == lab)[None, :]).mean(axis=1)


@dataclass(frozen=True)
class Summary:
    """Table-1 style summary of one certified test set."""

    num_points: int
    accuracy: float
    abstain_rate: float
    radii: tuple[float, ...]
    certified_accuracy: tuple[float, ...]
    certified_rate: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready mapping; curves are keyed by the radius printed with up to 6 digits."""
        return {
            "num_points": self.num_points,
            "accuracy": self.accuracy,
            "abstain_rate": self.abstain_rate,
            "certified_accuracy": {
                f"{r:g}": a for r, a in zip(self.radii, self.certified_accuracy, strict=True)
            },
            "certified_rate": {
                f"{r:g}": a for r, a in zip(self.radii, self.certified_rate, strict=True)
            },
        }


def summarize(
    prediction: ArrayLike,
    labels: ArrayLike,
    radius: ArrayLike,
    radii: Sequence[float] = DEFAULT_RADII,
    *,
    abstain_value: int = -1,
) -> Summary:
    """Accuracy, abstention rate, certified accuracy and certified rate at ``radii``."""
    pred, lab, rad = _checked(prediction=prediction, labels=labels, radius=radius)
    radii = tuple(float(r) for r in radii)
    return Summary(
        num_points=int(pred.size),
        accuracy=float(np.mean(pred == lab)),
        abstain_rate=float(np.mean(pred == abstain_value)),
        radii=radii,
        certified_accuracy=tuple(certified_accuracy(pred, lab, rad, radii).tolist()),
        certified_rate=tuple(certified_rate(rad, radii).tolist()),
    )


def count_certified_accuracy(
    prediction: ArrayLike, labels: ArrayLike, count: ArrayLike, counts: Sequence[int]
) -> NDArray[np.float64]:
    """Certified accuracy at each poison count r in ``counts``: mean(y_hat_i == y_i and
    r_i >= r) (a count certificate is inclusive; abstentions carry r_i = -1)."""
    pred, lab, cnt = _checked(prediction=prediction, labels=labels, count=count)
    held = cnt[None, :] >= np.asarray(counts, dtype=np.int64)[:, None]
    return (held & (pred == lab)[None, :]).mean(axis=1)


def count_summary(
    prediction: ArrayLike, labels: ArrayLike, count: ArrayLike,
    counts: Sequence[int] = DEFAULT_POISON_COUNTS,
) -> dict[str, object]:
    """Accuracy of the count's own prediction, median certified count, and certified accuracy
    and rate (mean(r_i >= r)) at each poison count, keyed like :meth:`Summary.as_dict`."""
    pred, lab, cnt = _checked(prediction=prediction, labels=labels, count=count)
    accuracy = count_certified_accuracy(pred, lab, cnt, counts)
    rate = (cnt[None, :] >= np.asarray(counts, dtype=np.int64)[:, None]).mean(axis=1)
    return {
        "accuracy": float(np.mean(pred == lab)),
        "median_count": float(np.median(cnt)),
        "certified_accuracy": {str(int(r)): float(a) for r, a in zip(counts, accuracy,
                                                                      strict=True)},
        "certified_rate": {str(int(r)): float(a) for r, a in zip(counts, rate, strict=True)},
    }
