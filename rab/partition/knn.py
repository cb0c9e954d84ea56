r"""The poison-count certificate of the plain (unsmoothed) K-NN (Jia, Cao & Gong, AAAI 2022).

The classifier
--------------
Training set T = ((x_1, y_1), ..., (x_n, y_n)) in its stored order.  For a test point x the
training points are ranked by the squared Euclidean distance ||x_i - x||^2 (float64, summed over
the differences), ties to the lower index, as in the project's smoothed K-NN (``rab.knn``: within
a level the lower index wins).  The K' = min(K, n) first points vote; the prediction is the class
with most votes, ties to the smaller class index (numpy argmax, as ``rab.knn``).  This is NOT the
Gaussian-smoothed K-NN that ``rab.knn.certify_knn`` certifies with an L2 radius: its prediction
(argmax of the expected tally under noise) may differ, so this certificate is reported with its
own prediction (``PoisonCountBatch.prediction``) and applies to that prediction only.

What one change can do to the vote
----------------------------------
Let S be the top-K' set and n_c its class tally.  Poisoning does not re-rank the clean points:
an inserted or deleted row shifts indices but keeps the relative order of all other rows, and
their distances to x do not change (the certificate assumes the clean points keep their
relative order, as a poisoning does; re-sorting the data is not a poisoning and can change
index tie-breaks).  The attacker may place an inserted point anywhere in the ranking, at any
distance, with any label (worst case, also for distance ties).

- Insertion of p: if p ranks outside the first K' of the new set, nothing changes.  Otherwise p
  enters and, if |T| >= K, the last point of S leaves (if |T| < K, nobody leaves).  The tally
  gains one vote (p's label) and loses at most one.
- Deletion of q: if q is not in S, nothing changes.  Otherwise q leaves and the first point
  after S in the ranking enters (none if |T| <= K).  The tally loses one vote and gains at most
  one.
- Modification of q into q': the other points keep their ranks.  If q in S and q' ranks in the
  top K', S' = S - q + q'; if q in S and q' does not, the next point enters in q's place; if q
  not in S and q' does, q' pushes out the last point of S; else nothing changes.  In every case
  one vote moves at most (or is added or removed).

So each insertion, deletion or modification changes the tally by removing at most one vote and
adding at most one, and lowers every gap g(c') = n_c - n_{c'} - 1[c' < c] by at most 2 (a vote
from c to c').  The prediction survives while every gap is >= 0 (``rab.partition.certificate``),
hence for any r operations with

    r <= r_KNN = floor( (n_c - max_{c' != c} (n_{c'} + 1[c' < c])) / 2 ),

whatever their mix.  Since r_KNN operations of any kind are allowed, ``count`` (symmetric
difference |T \triangle T'|, which upper-bounds the number of single insert/delete operations
needed) and ``modifications`` are both r_KNN.  The bound is attained when the last r_KNN + 1
of the K' neighbours are of class c: as many insertions at x labelled with the runner-up then
change the prediction (tests construct it; Jia et al. give the same per-operation bound of 2).
"""

from __future__ import annotations

from typing import cast

import numpy as np
from numpy.typing import ArrayLike

from rab.bounds import ABSTAIN
from rab.knn.inputs import KnnTraining, prepared
from rab.partition.certificate import PoisonCountBatch, plurality

__all__ = ["plain_knn_certificate", "plain_knn_order"]

_TRAIN_BLOCK = 8192


def _flat(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 2:
        raise ValueError(f"{name} must have shape (num_points, features...), got {arr.shape}")
    arr = arr.reshape(arr.shape[0], -1)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite")
    return arr


def _squared_distances(train: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.empty(train.shape[0])
    for begin in range(0, train.shape[0], _TRAIN_BLOCK):
        diff = train[begin : begin + _TRAIN_BLOCK] - x
        out[begin : begin + _TRAIN_BLOCK] = np.einsum("ij,ij->i", diff, diff)
    return out


def _first_ranked(distances: np.ndarray, top: int) -> np.ndarray:
    """The ``top`` first indices in (distance, index) order, in no particular order: those
    closer than the top-th smallest distance and, of those at it, the lowest indices (a
    partition, not a sort of all n)."""
    if top >= distances.size:
        return np.arange(distances.size)
    kth = np.partition(distances, top - 1)[top - 1]
    closer = np.flatnonzero(distances < kth)
    return np.concatenate([closer, np.flatnonzero(distances == kth)[: top - closer.size]])


def plain_knn_order(X_train: ArrayLike, x: ArrayLike) -> np.ndarray:
    """Training indices ranked by (squared distance to x, index) for one test point x."""
    train = _flat(X_train, "X_train")
    point = np.asarray(x, dtype=np.float64).reshape(-1)
    return np.argsort(_squared_distances(train, point), kind="stable")


def plain_knn_certificate(
    X_train: ArrayLike | KnnTraining, y_train: ArrayLike | None, X_test: ArrayLike, *, k: int,
    num_classes: int,
) -> PoisonCountBatch:
    """Prediction of the plain K-NN and its poison count r_KNN per test point (module
    docstring). ``X_train`` may be a prepared training set (``rab.knn.knn_training``, with
    ``y_train=None``)."""
    training = prepared(X_train, y_train)
    if training is None:
        train = _flat(cast(ArrayLike, X_train), "X_train")
        labels = np.asarray(y_train).astype(np.int64)
    else:
        train, labels = training.X, training.y
    test = _flat(X_test, "X_test")
    if labels.shape != (train.shape[0],) or train.shape[0] == 0:
        raise ValueError(f"need a non-empty training set with one label per row, got "
                         f"{train.shape[0]} rows and labels of shape {labels.shape}")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"X_train has {train.shape[1]} features, X_test {test.shape[1]}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if isinstance(num_classes, bool) or num_classes < 2 or labels.min() < 0 \
            or labels.max() >= num_classes:
        raise ValueError("labels must lie in 0..num_classes-1 with num_classes >= 2")
    top = min(int(k), train.shape[0])
    counts = np.zeros((test.shape[0], num_classes), dtype=np.int64)
    for t, point in enumerate(test):
        nearest = _first_ranked(_squared_distances(train, point), top)
        counts[t] = np.bincount(labels[nearest], minlength=num_classes)
    prediction, gaps = plurality(counts)
    count = np.where(prediction == ABSTAIN, -1, gaps.min(axis=1) // 2)
    return PoisonCountBatch(prediction, count, count, "knn", f"plain K-NN (K={int(k)})")
