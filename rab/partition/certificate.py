r"""Poison-count certificates from base-classifier votes: DPA and Finite Aggregation.

A *poison count* certificate of a prediction c at x for training set T is a number r such that
every training set T' with |T \triangle T'| <= r (insertions plus deletions: the size of the
symmetric difference) yields the same prediction c at x.  A modification (one point changed in
features and/or label) is one deletion and one insertion, so it counts twice; ``modifications``
reports the number of changed points the certificate allows on its own.

Votes and counts
----------------
There are M base classifiers; classifier i votes v_i in {0..C-1} or abstains (``NO_VOTE``, an
empty training subset: rule below).  n_c = #{i : v_i = c}.  The prediction is the plurality class,
ties to the smaller class index: c = argmax_c n_c (Levine & Feizi, ICLR 2021, eq. 2).  If every
classifier abstains the prediction is ``ABSTAIN`` with count -1 (no guarantee).

For every other class c' the *gap* is g(c') = n_c - n_{c'} - 1[c' < c] >= 0.  The prediction
survives exactly when every gap stays >= 0, since c then still beats c' strictly or wins the
tie by its smaller index.

DPA (Levine & Feizi 2021, Theorem 1)
-------------------------------------
Each training point lies in exactly one partition, so r poisoned points change the training
data of at most r classifiers.  A changed classifier moves at most one vote: from c to c' lowers
g(c') by 2, from a third class (or from an abstention) to c' or from c to a third class (or to
an abstention) by 1.  So r changed points lower each gap by at most 2r and the certificate is

    r_DPA = floor( (n_c - max_{c' != c} (n_{c'} + 1[c' < c])) / 2 ),

and floor(r_DPA / 2) modifications.  It is tight: flipping r_DPA + 1 votes from c to the
runner-up changes the prediction (tests construct it).

Finite Aggregation (Wang, Levine & Feizi, ICML 2022, Theorem 2)
---------------------------------------------------------------
k d buckets, each feeding the classifiers A_j (at most d of them, ``rab.partition.hashing``).
Against c', classifier i is worth w_i(c') = 2 if v_i = c, 1 if v_i is neither c nor c'
(abstentions included), 0 if v_i = c'.  Poisoning the points of a bucket set B (|B| <= r for r
poisoned points: each point lies in one bucket) changes only classifiers in the union of the
A_j, j in B, which lowers g(c') by at most sum_{i in union} w_i <= sum_{j in B} s_j(c') with
s_j(c') = sum_{i in A_j} w_i(c'), hence by at most the sum of the r largest s_j(c').  So
the prediction is certified for

    r_FA = min_{c' != c} max { r : sum of the r largest s_j(c') <= g(c') },

the greedy computation of the paper, and floor(r_FA / 2) modifications (a modification touches
at most two buckets).  With d = 1 every bucket is one classifier and s_j in {0, 1, 2}; the
largest values are the 2's of the n_c classifiers voting c, and since g(c') <= n_c the greedy
sum reaches g(c') after floor(g(c') / 2) of them: r_FA = r_DPA exactly.

No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse

from rab.bounds import ABSTAIN

__all__ = [
    "NO_VOTE",
    "PoisonCountBatch",
    "concat_counts",
    "dpa_certificate",
    "fa_certificate",
    "plurality",
    "vote_counts",
]

#: The vote of a base classifier that abstains (trained on an empty subset).
NO_VOTE = -1


@dataclass(frozen=True, eq=False)
class PoisonCountBatch:
    """Poison-count certificates of m test points (arrays of shape (m,), read-only).

    prediction: the class the count is proved for, ``ABSTAIN`` where none.  It is the prediction
    of the classifier named by ``classifier`` (e.g. the plain K-NN), which need not be the one
    a radius certificate beside it was computed for.  count: every training set within
    symmetric difference ``count`` of the one used gives ``prediction`` (-1: abstained).
    modifications: number of changed points tolerated (each is a deletion plus an insertion).
    method: "dpa", "fa" or "knn".
    """

    prediction: np.ndarray
    count: np.ndarray
    modifications: np.ndarray
    method: str
    classifier: str

    def __post_init__(self) -> None:
        m = np.shape(self.prediction)[0] if np.ndim(self.prediction) == 1 else -1
        for name in ("prediction", "count", "modifications"):
            arr = np.array(getattr(self, name), dtype=np.int64)
            if arr.ndim != 1 or arr.shape[0] != m:
                raise ValueError(f"{name} must be 1-D with the length of prediction, got "
                                 f"shape {arr.shape}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.prediction.shape[0])

    def to_dict(self) -> dict[str, object]:
        """JSON-ready arrays and labels."""
        return {"prediction": self.prediction.tolist(), "count": self.count.tolist(),
                "modifications": self.modifications.tolist(), "method": self.method,
                "classifier": self.classifier}


def concat_counts(batches: Sequence[PoisonCountBatch]) -> PoisonCountBatch:
    """Consecutive chunks of test points as one batch (same method and classifier)."""
    if not batches:
        raise ValueError("concat_counts needs at least one batch")
    first = batches[0]
    if any((b.method, b.classifier) != (first.method, first.classifier) for b in batches):
        raise ValueError("cannot concatenate poison counts of different methods")
    arrays = {name: np.concatenate([getattr(b, name) for b in batches])
              for name in ("prediction", "count", "modifications")}
    return PoisonCountBatch(**arrays, method=first.method, classifier=first.classifier)


def _votes(votes: ArrayLike, num_classes: int) -> np.ndarray:
    v = np.asarray(votes)
    if v.ndim != 2 or v.shape[0] < 1:
        raise ValueError(f"votes must have shape (num_classifiers, m), got {v.shape}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    v = v.astype(np.int64)
    if v.size and (v.min() < NO_VOTE or v.max() >= num_classes):
        raise ValueError(f"votes must lie in -1..{num_classes - 1}")
    return v


def vote_counts(votes: ArrayLike, num_classes: int) -> np.ndarray:
    """(m, C) number of classifiers voting each class (abstentions not counted)."""
    v = _votes(votes, num_classes)
    counts = np.zeros((v.shape[1], num_classes), dtype=np.int64)
    for c in range(num_classes):
        counts[:, c] = (v == c).sum(axis=0)
    return counts


def plurality(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plurality class (ties to the smaller index; ``ABSTAIN`` without votes) and the gaps
    g(c') (m, C) of the module docstring (a large value at c' = c)."""
    top = np.argmax(counts, axis=1)
    m, num_classes = counts.shape
    top_count = counts[np.arange(m), top]
    lower = np.arange(num_classes)[None, :] < top[:, None]
    gaps = top_count[:, None] - counts - lower.astype(np.int64)
    gaps[np.arange(m), top] = np.iinfo(np.int64).max // 4
    prediction = np.where(top_count > 0, top, ABSTAIN)
    return prediction, gaps


def _batch(prediction: np.ndarray, count: np.ndarray, method: str, classifier: str
           ) -> PoisonCountBatch:
    count = np.where(prediction == ABSTAIN, -1, count)
    modifications = np.where(count < 0, -1, count // 2)
    return PoisonCountBatch(prediction, count, modifications, method, classifier)


def dpa_certificate(votes: ArrayLike, num_classes: int) -> PoisonCountBatch:
    """DPA: plurality of the (k, m) votes and r_DPA per test point (module docstring)."""
    prediction, gaps = plurality(vote_counts(votes, num_classes))
    return _batch(prediction, gaps.min(axis=1) // 2, "dpa", "partition vote (DPA)")


def fa_certificate(
    votes: ArrayLike, buckets_of_classifiers: ArrayLike, num_classes: int
) -> PoisonCountBatch:
    """Finite Aggregation: plurality of the (k d, m) votes and r_FA per test point.

    ``buckets_of_classifiers`` (k d, d): the buckets each classifier was trained on
    (``PartitionScheme.buckets_of_classifiers``).
    """
    v = _votes(votes, num_classes)
    spread = np.asarray(buckets_of_classifiers, dtype=np.int64)
    num_classifiers = v.shape[0]
    if spread.ndim != 2 or spread.shape[0] != num_classifiers:
        raise ValueError(f"buckets_of_classifiers must have one row per classifier "
                         f"({num_classifiers}), got shape {spread.shape}")
    num_buckets = int(spread.max()) + 1
    pairs = {(int(b), i) for i, row in enumerate(spread) for b in row}  # distinct classifiers
    rows, cols = zip(*sorted(pairs), strict=True)
    incidence = sparse.csr_matrix(
        (np.ones(len(rows)), (np.array(rows), np.array(cols))),
        shape=(num_buckets, num_classifiers),
    )
    prediction, gaps = plurality(vote_counts(v, num_classes))
    count = np.full(v.shape[1], np.iinfo(np.int64).max // 4, dtype=np.int64)
    top_vote = v == prediction[None, :]
    for other in range(num_classes):
        rival = prediction != other
        if not rival.any():
            continue
        weight = np.where(top_vote, 2.0, np.where(v == other, 0.0, 1.0))  # (M, m)
        worth = np.asarray(incidence @ weight).T  # (m, buckets): s_j(c') per test point
        greedy = np.cumsum(-np.sort(-worth, axis=1), axis=1)
        allowed = np.array([np.searchsorted(greedy[t], gaps[t, other], side="right")
                            for t in range(v.shape[1])], dtype=np.int64)
        count = np.where(rival, np.minimum(count, allowed), count)
    return _batch(prediction, count, "fa", f"finite aggregation (FA, d={spread.shape[1]})")
