"""Adam and SGD over stacked parameters with a per-model step mask (for :mod:`.train`).

Base models of unequal training subsets take different numbers of steps per epoch.  Trained
together (parameters stacked along a leading model axis), a model whose epoch is over must not
move: a zero gradient is not enough, since Adam and momentum would still step.  These optimisers
apply ``torch.optim.Adam`` / ``torch.optim.SGD``'s update (same formulas, defaults and bias
correction) only to the models marked active, each with its own step count, so every model
follows the same trajectory as when trained alone (up to floating-point rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rab.ensemble.config import EnsembleConfig

__all__ = ["MaskedOptimizer"]

_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as rab.ensemble.loop uses them
_EPS = 1e-8


class MaskedOptimizer:
    """One optimiser per model over parameters of shape (M, ...): ``step(grads, active)``."""

    def __init__(self, params: Sequence[torch.Tensor], config: EnsembleConfig) -> None:
        self.params = list(params)
        self.config = config
        num_models = self.params[0].shape[0]
        self.steps = torch.zeros(num_models, dtype=torch.int64)
        self.first = [torch.zeros_like(p) for p in self.params]
        self.second = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], active: torch.Tensor) -> None:
        """Update the models where ``active`` (bool, shape (M,)) with their gradients."""
        cfg = self.config
        self.steps += active.to(torch.int64).cpu()
        for p, g, m, v in zip(self.params, grads, self.first, self.second, strict=True):
            shape = (-1,) + (1,) * (p.ndim - 1)
            mask = active.to(p.device).reshape(shape)
            if cfg.weight_decay:
                g = g + cfg.weight_decay * p
            if cfg.optimizer == "adam":
                b1, b2 = _BETAS
                m.copy_(torch.where(mask, m * b1 + g * (1 - b1), m))
                v.copy_(torch.where(mask, v * b2 + g * g * (1 - b2), v))
                steps = self.steps.clamp(min=1).to(torch.float64)
                c1 = (1 - b1 ** steps).to(p.dtype).to(p.device).reshape(shape)
                c2 = (1 - b2 ** steps).sqrt().to(p.dtype).to(p.device).reshape(shape)
                update = (cfg.lr / c1) * m / (v.sqrt() / c2 + _EPS)
            else:
                first = (self.steps == 1).to(p.device).reshape(shape)
                m.copy_(torch.where(mask, torch.where(first, g, m * cfg.momentum + g), m))
                update = cfg.lr * m if cfg.momentum else cfg.lr * g
            p.sub_(torch.where(mask, update, torch.zeros_like(p)))


def steps_per_epoch(sizes: Sequence[int], batch_size: int) -> list[int]:
    """ceil(n_i / batch_size) for every model's subset size n_i (0 for an empty subset)."""
    return [math.ceil(n / batch_size) for n in sizes]
