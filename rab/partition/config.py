"""Configuration of a partition-aggregation model: the scheme and how each base model trains.

Pure Python (the service validates jobs with it without importing torch).  The base models reuse
the ensemble's architectures, presets and seeded training (``rab.ensemble.config``) with
sigma = 0: no RAB noise, the poison-count certificate needs none.  Base model i is initialised and
its batches shuffled from seeds derived from ``(seed, i)`` (``rab.ensemble.noise.member_seeds``),
so it depends on the recorded seed and on its own training subset only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from rab.ensemble.config import EnsembleConfig
from rab.partition.hashing import PartitionScheme

__all__ = ["PartitionConfig"]


@dataclass(frozen=True)
class PartitionConfig:
    """The partition scheme and the base models' training settings (``base.num_models`` equals
    the number of base classifiers, ``base.sigma`` is 0, no DP-SGD)."""

    scheme: PartitionScheme
    base: EnsembleConfig

    def __post_init__(self) -> None:
        if self.base.sigma != 0.0:
            raise ValueError(f"partition base models train without noise: sigma must be 0, got "
                             f"{self.base.sigma}")
        if self.base.dp is not None:
            raise ValueError("partition base models do not support DP-SGD")
        if self.base.num_models != self.scheme.num_classifiers:
            raise ValueError(f"base.num_models={self.base.num_models} but the scheme has "
                             f"{self.scheme.num_classifiers} classifiers")

    @property
    def seed(self) -> int:
        return self.base.seed

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme.to_dict(), "base": self.base.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartitionConfig:
        scheme = {k: v for k, v in dict(data["scheme"]).items() if k != "hash"}
        return cls(PartitionScheme(**scheme), EnsembleConfig.from_dict(dict(data["base"])))

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of everything that determines the base models."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
