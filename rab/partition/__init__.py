"""Poison-count certificates: partition aggregation (DPA, Finite Aggregation) and the plain K-NN.

A poison-count certificate bounds the NUMBER of training points an attacker may insert, delete
or modify (whatever they contain) without changing a prediction; RAB's radius bounds the total
L2 norm of the patterns instead (``docs/partition.md`` says when to use which).  Modules:

- ``hashing``: :class:`PartitionScheme`, content-hash partitions / FA buckets (no torch);
- ``certificate``: :class:`PoisonCountBatch`, DPA and FA certificates from votes (no torch);
- ``knn``: the plain K-NN's poison count (no torch);
- ``certify``: votes to certificates, any callable base learner (no torch);
- ``config``: :class:`PartitionConfig`, scheme plus the base models' settings (no torch);
- ``optim`` / ``train``: base models trained alone or stacked, resumable (torch);
- ``predict``: votes of stored base models (torch).

Names are imported lazily, so the torch-free parts can be used without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "AGGREGATIONS": "hashing",
    "PartitionScheme": "hashing",
    "content_digests": "hashing",
    "fa_spread": "hashing",
    "NO_VOTE": "certificate",
    "PoisonCountBatch": "certificate",
    "concat_counts": "certificate",
    "dpa_certificate": "certificate",
    "fa_certificate": "certificate",
    "vote_counts": "certificate",
    "plain_knn_certificate": "knn",
    "certify_votes": "certify",
    "certify_with_learner": "certify",
    "vote_certificates": "certify",
    "PartitionConfig": "config",
    "partition_chunk": "train",
    "read_partition_config": "train",
    "train_partition": "train",
    "train_missing": "train",
    "train_subset": "train",
    "train_subsets_batched": "train",
    "base_model_votes": "predict",
    "load_base_model": "predict",
    "partition_votes": "predict",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rab.partition' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rab.partition.{_EXPORTS[name]}"), name)
