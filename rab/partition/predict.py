"""Votes of stored partition base models on test inputs (torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rab.ensemble.artifacts import read_member
from rab.ensemble.predict import load_member, predict_votes
from rab.partition.certificate import NO_VOTE
from rab.partition.train import read_partition_config

__all__ = ["partition_votes"]


def partition_votes(
    out_dir: str | Path, X_test: np.ndarray, *, device: str | torch.device | None = None
) -> np.ndarray:
    """(M, m) hard votes of the base models in ``out_dir``; ``NO_VOTE`` for empty subsets."""
    config = read_partition_config(out_dir)
    base = config.base
    X = np.asarray(X_test, dtype=np.float32)
    votes = np.full((base.num_models, len(X)), NO_VOTE, dtype=np.int64)
    for i in range(base.num_models):
        artifact = read_member(Path(out_dir), i)
        if artifact.meta.get("empty"):
            continue
        member = load_member(artifact, base, device=device)
        votes[i] = predict_votes([member], X, base).hard[0]
    return votes
