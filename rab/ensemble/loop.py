"""The training loop shared by the DNN-RAB trainers (eq. 20: minimise sum_i l(h(x_i + d_k^i), y_i)).

Plain mini-batch training without a DataLoader: the noisy training set sits in one tensor on the
training device and each epoch visits it in the order of a seeded ``torch.randperm`` (like the
authors' ``DataLoader(shuffle=True)``, last batch smaller).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from rab.ensemble.config import EnsembleConfig
from rab.nets import classification_loss

Batch = tuple[torch.Tensor, torch.Tensor]


def make_optimizer(params: Iterable[torch.Tensor], config: EnsembleConfig) -> torch.optim.Optimizer:
    """Adam (the authors' choice) or SGD with momentum, at ``config.lr``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def epoch_orders(n: int, epochs: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """One ``randperm(n)`` per epoch from ``generator`` (a CPU generator)."""
    for _ in range(epochs):
        yield torch.randperm(n, generator=generator)


def shuffled_batches(
    X: torch.Tensor, y: torch.Tensor, *, batch_size: int, epochs: int, generator: torch.Generator
) -> Iterator[Batch]:
    """Mini-batches of (X, y) for ``epochs`` epochs, each epoch in a fresh seeded order."""
    for order in epoch_orders(len(X), epochs, generator):
        order = order.to(X.device)
        for start in range(0, len(X), batch_size):
            idx = order[start : start + batch_size]
            yield X[idx], y[idx]


def fit(
    model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Batch], num_classes: int
) -> None:
    """Minimise the classification loss over ``batches`` (one optimiser step per batch)."""
    model.train()
    for xb, yb in batches:
        loss = classification_loss(model(xb), yb, num_classes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
