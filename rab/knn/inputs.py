"""Validation of the K-NN inputs shared by the exact, Monte Carlo and reference computations."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import cast

import numpy as np
from numpy.typing import ArrayLike

from rab._validate import check_positive_scalar
from rab.knn.levels import check_edges


@dataclass(frozen=True, eq=False)
class KnnTraining:
    """A training set checked once, for any number of K-NN calls (:func:`knn_training`):
    features flattened to (n, d) float64, int64 labels in 0..num_classes-1, and the squared
    norms ||x_i||^2 the noncentralities expand around (eq. 71).  Its arrays are its own and
    read-only, so nothing changes them after the check; a certification with it skips the
    conversion, the finiteness check and the norms of the whole training set (for an MNIST
    training set, tens of ms per call)."""

    X: np.ndarray
    y: np.ndarray
    sq_norms: np.ndarray
    num_classes: int

    @property
    def nbytes(self) -> int:
        return int(self.X.nbytes + self.y.nbytes + self.sq_norms.nbytes)


def knn_training(
    X_train: ArrayLike, y_train: ArrayLike, num_classes: int | None = None
) -> KnnTraining:
    """The training set checked and prepared once (copied: later changes to the given arrays
    do not reach it); pass it as ``X_train`` (with ``y_train=None``) to the K-NN functions."""
    return _training(X_train, y_train, num_classes, copy=True)


def prepared(X_train: ArrayLike | KnnTraining, y_train: ArrayLike | None) -> KnnTraining | None:
    """``X_train`` if it is a prepared training set (then ``y_train`` must be None), else None
    (then ``y_train`` is required)."""
    if isinstance(X_train, KnnTraining):
        if y_train is not None:
            raise ValueError("a KnnTraining holds its labels: pass y_train=None with it")
        return X_train
    if y_train is None:
        raise ValueError("y_train is required with training features")
    return None


def _training(
    X_train: ArrayLike, y_train: ArrayLike, num_classes: int | None, *, copy: bool
) -> KnnTraining:
    train = _features(X_train, "X_train", copy=copy)
    if train.shape[1] == 0:
        raise ValueError("X_train must have at least one feature")
    labels = np.asarray(y_train)
    if labels.shape != (train.shape[0],):
        raise ValueError(
            f"y_train must have shape ({train.shape[0]},) to match X_train, got {labels.shape}"
        )
    if labels.size and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise ValueError("y_train must hold integer class labels")
    labels = labels.astype(np.int64)
    if train.shape[0] == 0:
        raise ValueError("X_train must hold at least one training point")
    sq_norms = np.einsum("ij,ij->i", train, train)
    if copy:
        for array in (train, labels, sq_norms):
            array.flags.writeable = False
    return KnnTraining(train, labels, sq_norms, _num_classes(labels, num_classes))


def _num_classes(labels: np.ndarray, num_classes: int | None) -> int:
    """``num_classes`` (default: the largest label + 1), checked against the labels."""
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    if not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"y_train labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    return int(num_classes)


@dataclass(frozen=True)
class KnnProblem:
    """Checked inputs: features flattened to (n, d) / (m, d) float64, labels int64, and the
    training points' squared norms."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    sigma: float
    k: int
    edges: np.ndarray
    num_classes: int
    train_sq: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def num_levels(self) -> int:
        return int(self.edges.size + 1)

    def noncentralities(self, rows: slice = slice(None)) -> np.ndarray:
        """lambda[t, i] = ||x_i - x_t||^2 / sigma^2 for the selected test rows (eq. 71).

        ||a||^2 + ||b||^2 - 2 a.b (one matrix product) loses relative precision when the
        distance is small next to the norms (raw Spambase features reach 15,841); where its
        typical rounding error sqrt(d) eps (||a|| + ||b||)^2 could exceed 1e-12 of the result,
        the distance is recomputed from the differences.
        """
        test = self.X_test[rows]
        test_sq = np.einsum("ij,ij->i", test, test)
        train_sq = self.train_sq
        sq = test_sq[:, None] + train_sq[None, :] - 2.0 * test @ self.X_train.T
        rounding = (
            math.sqrt(self.dim)
            * np.finfo(np.float64).eps
            * (np.sqrt(test_sq)[:, None] + np.sqrt(train_sq)[None, :]) ** 2
        )
        redo = rounding > 1e-12 * sq
        for t in np.flatnonzero(redo.any(axis=1)):
            idx = np.flatnonzero(redo[t])
            diff = self.X_train[idx] - test[t]
            sq[t, idx] = np.einsum("ij,ij->i", diff, diff)
        return np.maximum(sq, 0.0) / self.sigma**2


def _features(x: ArrayLike, name: str, *, copy: bool = False) -> np.ndarray:
    arr = np.array(x, dtype=np.float64) if copy else np.asarray(x, dtype=np.float64)
    if arr.ndim < 2:
        raise ValueError(f"{name} must have shape (num_points, features...), got {arr.shape}")
    arr = arr.reshape(arr.shape[0], int(np.prod(arr.shape[1:])))
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return arr


def check_problem(
    X_train: ArrayLike | KnnTraining,
    y_train: ArrayLike | None,
    X_test: ArrayLike,
    *,
    sigma: float,
    k: int,
    edges: ArrayLike,
    num_classes: int | None,
) -> KnnProblem:
    """Check shapes, labels, K, sigma and edges; ValueError naming the problem otherwise.
    ``X_train`` may be a :class:`KnnTraining` (then ``y_train`` is None): its checks are not
    repeated."""
    training = prepared(X_train, y_train)
    if training is not None:
        if num_classes is not None and num_classes != training.num_classes:
            training = replace(training, num_classes=_num_classes(training.y, num_classes))
    else:  # features and labels (prepared() checked that the labels are there)
        training = _training(cast(ArrayLike, X_train), cast(ArrayLike, y_train), num_classes,
                             copy=False)
    train = training.X
    test = _features(X_test, "X_test")
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"X_train and X_test must have the same number of features, got {train.shape[1]} "
            f"and {test.shape[1]}"
        )
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > train.shape[0]:
        raise ValueError(f"k = {k} exceeds the number of training points {train.shape[0]}")
    return KnnProblem(
        X_train=train,
        y_train=training.y,
        X_test=test,
        sigma=check_positive_scalar(sigma, "sigma"),
        k=int(k),
        edges=check_edges(np.asarray(edges)),
        num_classes=training.num_classes,
        train_sq=training.sq_norms,
    )
