"""Certified predictions of the smoothed K-NN from its exact class probabilities (eq. 14, 15).

No confidence interval is needed (section 6.3): pA and pB are the exact q of the top class and
the runner-up, widened by the bound on neglected mass (``ExactKnnResult.slack``), which is
moved against the prediction (pA - slack, pB + slack) by ``rab.bounds.certify_exact``.  The
radius bounds sqrt(sum_i ||delta_i||^2) (eq. 14); ``per_sample_radius(r)`` of the returned
batch gives the pattern norm allowed on each of r poisoned points (eq. 15).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from rab.bounds import CertificateBatch, certify_exact
from rab.knn.exact import exact_knn
from rab.knn.inputs import KnnTraining
from rab.knn.levels import EdgeRule, default_edges


def certify_knn(
    X_train: ArrayLike | KnnTraining,
    y_train: ArrayLike | None,
    X_test: ArrayLike,
    *,
    sigma: float,
    k: int,
    edges: ArrayLike | None = None,
    num_classes: int | None = None,
    num_levels: int = 200,
    spread: float = 1.0,
    backend: str = "auto",
    edge_rule: EdgeRule = "quantiles",
) -> CertificateBatch:
    """Predictions, pA, pB and radius (eq. 14) per test point for the Gaussian-smoothed K-NN.

    ``edges`` default to ``default_edges(d, sigma, num_levels, spread, edge_rule)``
    (``edge_rule="authors"`` for the authors' edges); they must not depend on the training
    features.  Rows whose top class does not beat the runner-up by more than
    twice the slack abstain.  ``X_train`` may be a prepared training set
    (``rab.knn.inputs.knn_training``, with ``y_train=None``), checked once for many calls.
    """
    if edges is None:  # exact_knn validates the inputs; here only the feature count is needed
        features = X_train.X if isinstance(X_train, KnnTraining) else X_train
        dim = int(np.prod(np.shape(features)[1:]))
        edges = default_edges(dim, sigma, num_levels, spread, edge_rule)
    result = exact_knn(
        X_train,
        y_train,
        X_test,
        sigma=sigma,
        k=k,
        edges=edges,
        num_classes=num_classes,
        backend=backend,
    )
    return certify_exact(result.proba, sigma=sigma, slack=result.slack)
