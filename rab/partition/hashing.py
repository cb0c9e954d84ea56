"""Which training points each base classifier sees: fixed by a hash of the point's CONTENT.

Deep Partition Aggregation (DPA; Levine & Feizi, ICLR 2021, section 3) and Finite Aggregation
(FA; Wang, Levine & Feizi, ICML 2022, section 3) need the assignment of a training point to be a
function of that point alone, so that inserting, deleting or changing one point changes the
training data of a known, small set of base classifiers and no other.  Here:

- the *digest* of a point (x, y) is SHA-256 of a version tag, the feature shape, the features as
  little-endian float32 (``-0.0`` folded into ``0.0``, so equal numbers hash equally) and the
  label as little-endian int64 (:func:`content_digests`);
- DPA: point -> partition ``digest mod k`` (k partitions, one classifier each);
- FA: point -> bucket ``digest mod (k d)`` (k d buckets); classifier i (of k d) trains on the d
  buckets ``{i} u {pi_t(i) : t = 1..d-1}`` with ``pi_t`` permutations of the buckets fixed by
  SHA-256 of their index (:func:`fa_spread`).  Each bucket feeds exactly d classifiers (at most
  d distinct ones), and with d = 1 the scheme is DPA's, classifier for classifier.

Nothing depends on the row order: a classifier's rows are listed in the order of their digests
(ties, i.e. duplicated points, are identical rows), so permuting the training set yields the
same training subsets, row for row.  Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

__all__ = [
    "AGGREGATIONS",
    "HASH_VERSION",
    "Aggregation",
    "PartitionScheme",
    "content_digests",
    "fa_spread",
]

Aggregation = Literal["dpa", "fa"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
#: Part of every digest: changing the canonical encoding must change this tag.
HASH_VERSION = b"rab-partition-v1"
#: Largest number of base classifiers a scheme may ask for (k for DPA, k d for FA).
MAX_CLASSIFIERS = 100_000


def content_digests(X: np.ndarray, y: np.ndarray) -> list[bytes]:
    """SHA-256 digest of every training point (x_i, y_i), see the module docstring."""
    features = np.asarray(X)
    labels = np.asarray(y)
    if features.ndim < 1 or labels.shape != (features.shape[0],):
        raise ValueError(f"need one label per row, got X {features.shape} and y {labels.shape}")
    if np.issubdtype(features.dtype, np.floating) and not np.isfinite(features).all():
        raise ValueError("X contains NaN or infinite values")
    canonical = np.ascontiguousarray(features.astype("<f4") + np.float32(0.0))  # -0.0 -> 0.0
    codes = labels.astype("<i8")
    head = HASH_VERSION + repr(tuple(features.shape[1:])).encode()
    out = []
    for row, label in zip(canonical, codes, strict=True):
        digest = hashlib.sha256(head)
        digest.update(row.tobytes())
        digest.update(label.tobytes())
        out.append(digest.digest())
    return out


def _mod(digests: list[bytes], modulus: int) -> np.ndarray:
    return np.array([int.from_bytes(d, "big") % modulus for d in digests], dtype=np.int64)


def fa_spread(num_buckets: int, d: int) -> np.ndarray:
    """(num_buckets, d) bucket indices of every FA classifier: column 0 is the classifier's own
    bucket, column t >= 1 the permutation pi_t of the buckets ordered by SHA-256 of (t, j)."""
    if d < 1 or num_buckets < 1:
        raise ValueError(f"need d >= 1 and at least one bucket, got d={d}, {num_buckets}")
    columns = [np.arange(num_buckets, dtype=np.int64)]
    for t in range(1, d):
        keys = [hashlib.sha256(b"rab-fa-spread-v1:%d:%d" % (t, j)).digest()
                for j in range(num_buckets)]
        columns.append(np.array(sorted(range(num_buckets), key=keys.__getitem__), dtype=np.int64))
    return np.stack(columns, axis=1)


@dataclass(frozen=True)
class PartitionScheme:
    """k partitions, DPA or FA with d buckets per classifier (module docstring)."""

    k: int
    aggregation: Aggregation = "dpa"
    d: int = 1

    def __post_init__(self) -> None:
        for name in ("k", "d"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got "
                             f"{self.aggregation!r}")
        if self.aggregation == "dpa" and self.d != 1:
            raise ValueError("d (buckets per classifier) applies to aggregation='fa' only")
        if self.num_classifiers > MAX_CLASSIFIERS:
            raise ValueError(f"{self.num_classifiers} base classifiers exceed the limit of "
                             f"{MAX_CLASSIFIERS}")

    @property
    def num_buckets(self) -> int:
        """k for DPA, k d for FA."""
        return self.k * self.d

    @property
    def num_classifiers(self) -> int:
        """Number of base classifiers (one per bucket in both schemes)."""
        return self.num_buckets

    def buckets_of_classifiers(self) -> np.ndarray:
        """(num_classifiers, d) buckets each classifier trains on."""
        return fa_spread(self.num_buckets, self.d)

    def buckets(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
        """Bucket of every training point (``digest mod num_buckets``) and the digests."""
        digests = content_digests(X, y)
        return _mod(digests, self.num_buckets), digests

    def subsets(self, X: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """Row indices of every classifier's training subset, each ordered by digest."""
        bucket, digests = self.buckets(X, y)
        order = sorted(range(len(digests)), key=digests.__getitem__)
        rows_of_bucket: list[list[int]] = [[] for _ in range(self.num_buckets)]
        for row in order:
            rows_of_bucket[bucket[row]].append(row)
        out = []
        for own in self.buckets_of_classifiers():
            chosen = sorted(set(own.tolist()))
            rows = [r for b in chosen for r in rows_of_bucket[b]]
            out.append(np.array(sorted(rows, key=digests.__getitem__), dtype=np.int64))
        return out

    def to_dict(self) -> dict[str, object]:
        return {"k": self.k, "aggregation": self.aggregation, "d": self.d,
                "hash": HASH_VERSION.decode()}
