"""Votes of stored partition base models on test inputs (torch)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from rab.ensemble.artifacts import MemberArtifact, read_member
from rab.ensemble.config import EnsembleConfig
from rab.ensemble.predict import Member, load_member, predict_votes
from rab.partition.certificate import NO_VOTE
from rab.partition.train import read_partition_config

__all__ = ["base_model_votes", "load_base_model", "partition_votes"]


def load_base_model(
    artifact: MemberArtifact, base: EnsembleConfig, *, device: str | torch.device | None = None
) -> Member | None:
    """Base model ``artifact.index`` rebuilt from its artefact (hash verified), None for an
    empty subset (that classifier abstains)."""
    if artifact.meta.get("empty") or not artifact.state_dict_bytes:
        return None
    return load_member(artifact, base, device=device)


def base_model_votes(
    models: Iterable[Member | None], X_test: np.ndarray, base: EnsembleConfig
) -> np.ndarray:
    """(M, m) hard votes of the base models, in order (``NO_VOTE`` where a model is None);
    sigma is 0, so each votes on x itself.  An iterator is consumed one model at a time."""
    X = np.asarray(X_test, dtype=np.float32)
    rows = [np.full(len(X), NO_VOTE, dtype=np.int64) if model is None
            else predict_votes([model], X, base).hard[0] for model in models]
    return np.stack(rows) if rows else np.zeros((0, len(X)), dtype=np.int64)


def partition_votes(
    out_dir: str | Path, X_test: np.ndarray, *, device: str | torch.device | None = None
) -> np.ndarray:
    """(M, m) hard votes of the base models in ``out_dir``; ``NO_VOTE`` for empty subsets."""
    base = read_partition_config(out_dir).base
    models = (load_base_model(read_member(Path(out_dir), i), base, device=device)
              for i in range(base.num_models))
    return base_model_votes(models, X_test, base)
