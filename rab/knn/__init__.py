"""Exact certification of the Gaussian-smoothed K-NN (paper section 6.3, Theorem 3, App. B).

- ``exact_knn_proba`` / ``exact_knn``: exact q(c | x) (with the bound on neglected mass);
- ``default_edges``: the authors' data-independent distance levels;
- ``monte_carlo_knn_proba``: the sampling estimate ("vanilla RAB"), baseline and check;
- ``certify_knn``: predictions, pA, pB and radius (eq. 14, 15) through ``rab.bounds``;
- ``knn_training``: a training set checked once (features, labels, squared norms) for many
  calls.

Importing this package does not import torch; ``backend="auto"`` uses it only with CUDA.
"""

from rab.knn.certify import certify_knn
from rab.knn.exact import ExactKnnResult, exact_knn, exact_knn_proba
from rab.knn.inputs import KnnTraining, knn_training
from rab.knn.levels import default_edges
from rab.knn.montecarlo import monte_carlo_knn_counts, monte_carlo_knn_proba

__all__ = [
    "ExactKnnResult",
    "KnnTraining",
    "certify_knn",
    "default_edges",
    "exact_knn",
    "exact_knn_proba",
    "knn_training",
    "monte_carlo_knn_counts",
    "monte_carlo_knn_proba",
]
