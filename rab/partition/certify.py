"""Partition aggregation end to end without torch: any base learner, votes, certificates.

- :func:`certify_votes`: the certificate of a scheme (DPA or FA) from its classifiers' votes;
- :func:`vote_certificates`: the same votes as a ``rab.bounds.CertificateBatch`` (vote shares
  as p_a / p_b, radius 0: a partition vote has no L2 radius), so that the evaluation pipeline's
  accuracy metrics apply unchanged;
- :func:`certify_with_learner`: partition (X, y), train a cheap base learner per subset (a
  callable), vote and certify; the brute-force tests retrain it on poisoned sets.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from rab.bounds import CertificateBatch
from rab.partition.certificate import (
    NO_VOTE,
    PoisonCountBatch,
    dpa_certificate,
    fa_certificate,
    plurality,
    vote_counts,
)
from rab.partition.hashing import PartitionScheme

__all__ = ["Learner", "certify_votes", "certify_with_learner", "vote_certificates"]

#: ``learner(X_subset, y_subset, X_test) -> (m,) predicted classes`` (subset never empty).
Learner = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def certify_votes(votes: ArrayLike, scheme: PartitionScheme, num_classes: int
                  ) -> PoisonCountBatch:
    """DPA or FA certificate (``rab.partition.certificate``) of the (M, m) votes."""
    if scheme.aggregation == "dpa":
        return dpa_certificate(votes, num_classes)
    return fa_certificate(votes, scheme.buckets_of_classifiers(), num_classes)


def vote_certificates(votes: ArrayLike, num_classes: int) -> CertificateBatch:
    """Plurality votes as a radius-free certificate batch (method "partition-vote")."""
    counts = vote_counts(votes, num_classes)
    prediction, _ = plurality(counts)
    total = np.asarray(votes).shape[0]
    ranked = np.sort(counts, axis=1)
    return CertificateBatch(
        prediction=prediction, top_class=np.argmax(counts, axis=1),
        p_a=ranked[:, -1] / total, p_b=ranked[:, -2] / total,
        radius=np.zeros(len(prediction)), sigma=0.0, method="partition-vote", alpha=None,
        num_votes=total,
    )


def certify_with_learner(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, scheme: PartitionScheme,
    learner: Learner, num_classes: int,
) -> tuple[PoisonCountBatch, np.ndarray]:
    """Train ``learner`` on every subset of ``scheme``, vote on ``X_test`` (an empty subset
    abstains), certify; return the certificates and the (M, m) votes."""
    votes = np.full((scheme.num_classifiers, len(X_test)), NO_VOTE, dtype=np.int64)
    for i, rows in enumerate(scheme.subsets(X, y)):
        if len(rows):
            votes[i] = learner(X[rows], y[rows], X_test)
    return certify_votes(votes, scheme, num_classes), votes
