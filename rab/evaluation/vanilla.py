"""The undefended ("vanilla") model trained on the same (poisoned) data: the paper's Figure 3.

What the defence buys is read off against the model without randomized smoothing:

- for the K-NN: the plain K-NN (same K) on the noise-free training set, scikit-learn's
  ``KNeighborsClassifier`` (brute-force Euclidean distances, majority vote, ties to the smallest
  class);
- for an ensemble or a partition aggregation: one model of the same architecture and training
  settings, trained on the whole training set without noise (sigma = 0) and evaluated without
  test-time noise.

Its attack success rate (share of backdoored inputs predicted as the target) is the paper's
"Success Rate" column, reported with two denominators, since the published MNIST figures are
only reproduced by the second and the CIFAR ones by the first (issue 14):
``attack_success_rate`` divides by the backdoored test inputs (the non-target test points with
the trigger), ``attack_success_rate_all_test`` by all test points (the clean test set's size).
Its clean and backdoor accuracy are Figure 3's vanilla bars.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rab.data import Dataset
from rab.evaluation.methods import EnsembleMethod, KnnMethod, Method, PartitionMethod
from rab.evaluation.summary import attack_success_rate
from rab.evaluation.testsets import TestSet
from rab.extras import require

__all__ = ["vanilla_metrics", "vanilla_predictions"]


def _knn_predictions(train: Dataset, tests: Sequence[TestSet], k: int) -> dict[str, np.ndarray]:
    require("sklearn", "the vanilla (undefended) K-NN")
    from sklearn.neighbors import KNeighborsClassifier

    if k > len(train.y_train):
        raise ValueError(f"K = {k} exceeds the {len(train.y_train)} training points")
    model = KNeighborsClassifier(n_neighbors=k, algorithm="brute")
    model.fit(train.X_train.reshape(len(train.X_train), -1), train.y_train)
    return {t.subset: model.predict(t.X.reshape(len(t.X), -1)).astype(np.int64) for t in tests}


def _ensemble_predictions(
    train: Dataset, tests: Sequence[TestSet], method: EnsembleMethod | PartitionMethod
) -> dict[str, np.ndarray]:
    require("torch", "the vanilla (undefended) network")
    from rab.ensemble.predict import load_member, predict_votes
    from rab.ensemble.train import train_member

    config = method.config(train.input_shape, train.num_classes, vanilla=True)
    artifact = train_member(config, np.asarray(train.X_train), np.asarray(train.y_train), 0)
    member = load_member(artifact, config)
    return {
        t.subset: predict_votes([member], np.asarray(t.X, dtype=np.float32), config).hard[0]
        for t in tests
    }


def vanilla_predictions(
    train: Dataset, tests: Sequence[TestSet], method: Method
) -> dict[str, np.ndarray]:
    """Predictions of the undefended counterpart of ``method`` on every test set."""
    if isinstance(method, KnnMethod):
        return _knn_predictions(train, tests, method.k)
    if isinstance(method, EnsembleMethod | PartitionMethod):
        return _ensemble_predictions(train, tests, method)
    raise TypeError(f"unknown method {method!r}")


def vanilla_metrics(
    tests: Sequence[TestSet], predictions: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Accuracy per test set, and the attack success rate on a backdoored one (over the
    backdoored inputs and over all test points: module docstring)."""
    out: dict[str, dict[str, float]] = {}
    num_all = next((len(t) for t in tests if t.subset == "clean"), None)
    for test in tests:
        if test.labels is None:
            continue
        pred = predictions[test.subset]
        entry = {"accuracy": float(np.mean(pred == test.labels))}
        if test.attack_labels is not None:
            entry["attack_success_rate"] = attack_success_rate(pred, test.attack_labels)
            if num_all is not None:
                hits = float(np.sum(pred == test.attack_labels))
                entry["attack_success_rate_all_test"] = hits / num_all
        out[test.subset] = entry
    return out
