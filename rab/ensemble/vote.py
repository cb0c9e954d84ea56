"""Vote matrices of a DNN-RAB ensemble (paper eq. 19, Algorithm 1 lines 7-9), kept for re-use.

A :class:`VoteMatrices` holds, for N models and m test points, the hard vote (class index) and the
soft vote (class probabilities) of model k on x + u_k. Certificates for any alpha, bound or subset
of models are recomputed from it without retraining (:mod:`rab.ensemble.certify`). Stored with
``np.save`` (no pickle) plus a JSON file naming the models by SHA-256.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rab.ensemble.artifacts import atomic_write

_HARD, _SOFT, _INFO = "hard_votes.npy", "soft_votes.npy", "votes.json"


@dataclass(frozen=True)
class VoteMatrices:
    """Votes of N models on m test points at noise level ``sigma``.

    hard: int64 (N, m), class predicted by model k for test point i (on x_i + u_k).
    soft: float32 (N, m, C), class probabilities of model k for test point i.
    sha256: the N model digests, in row order.
    """

    hard: np.ndarray = field(repr=False)
    soft: np.ndarray = field(repr=False)
    sha256: tuple[str, ...]
    sigma: float

    def __post_init__(self) -> None:
        if self.hard.ndim != 2 or self.hard.dtype != np.int64:
            raise ValueError(f"hard votes must be int64 (N, m), got {self.hard.dtype} "
                             f"{self.hard.shape}")
        if self.soft.ndim != 3 or self.soft.shape[:2] != self.hard.shape:
            raise ValueError(f"soft votes must have shape (N, m, C) with (N, m) = "
                             f"{self.hard.shape}, got {self.soft.shape}")
        if len(self.sha256) != self.hard.shape[0]:
            raise ValueError(f"{len(self.sha256)} model digests for {self.hard.shape[0]} rows")
        if self.hard.size and (self.hard.min() < 0 or self.hard.max() >= self.num_classes):
            raise ValueError(f"hard votes must lie in 0..{self.num_classes - 1}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be finite and >= 0, got {self.sigma}")

    @property
    def num_models(self) -> int:
        """N, the number of models that voted."""
        return int(self.hard.shape[0])

    @property
    def num_points(self) -> int:
        """m, the number of test points."""
        return int(self.hard.shape[1])

    @property
    def num_classes(self) -> int:
        """C, the number of classes."""
        return int(self.soft.shape[2])

    def counts(self) -> np.ndarray:
        """Hard-vote counts per test point and class, int64 (m, C) (N q_hat of eq. 19)."""
        one_hot = self.hard[:, :, None] == np.arange(self.num_classes)
        return one_hot.sum(axis=0, dtype=np.int64)

    def mean_proba(self) -> np.ndarray:
        """Soft vote: the models' mean class probabilities, float64 (m, C)."""
        return self.soft.astype(np.float64).mean(axis=0)

    def first(self, num_models: int) -> VoteMatrices:
        """The votes of the first ``num_models`` models only."""
        if not 1 <= num_models <= self.num_models:
            raise ValueError(f"num_models must lie in 1..{self.num_models}, got {num_models}")
        return VoteMatrices(self.hard[:num_models], self.soft[:num_models],
                            self.sha256[:num_models], self.sigma)

    def save(self, directory: str | Path) -> None:
        """Write ``hard_votes.npy``, ``soft_votes.npy`` and ``votes.json`` into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name, array in ((_HARD, self.hard), (_SOFT, self.soft)):
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            atomic_write(out / name, buffer.getvalue())
        info = {"sha256": list(self.sha256), "sigma": self.sigma}
        atomic_write(out / _INFO, (json.dumps(info, indent=1) + "\n").encode())

    @classmethod
    def load(cls, directory: str | Path) -> VoteMatrices:
        """Read vote matrices written by :meth:`save` (without unpickling anything)."""
        src = Path(directory)
        info = json.loads((src / _INFO).read_text())
        return cls(np.load(src / _HARD, allow_pickle=False), np.load(src / _SOFT,
                   allow_pickle=False), tuple(info["sha256"]), float(info["sigma"]))
