"""DP-SGD training of one DNN-RAB member through Opacus (paper section 6.2, Table 4).

Differences from the authors' code, which vendored an old ``torchdp`` that patched Adam and did no
privacy accounting: Opacus wraps the same optimiser (Adam by default) in a ``DPOptimizer`` that
clips each per-sample gradient to ``max_grad_norm`` and adds N(0, (noise_multiplier *
max_grad_norm)^2) noise; batches are drawn by Poisson sampling (expected size ``batch_size``), which
the accountant assumes; epsilon is reported at ``delta`` (default 1e-5) for the whole training.
BatchNorm has no per-sample gradient, so the normalised architectures use GroupNorm under DP
(``EnsembleConfig.norm = "group"``, set by ``preset(..., dp=True)``).

The training-set epsilon is that of one model k on its noisy copy X + d_k; the ensemble of N
models releases N such mechanisms on the same data, which this number does not account for.
"""

from __future__ import annotations

import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rab.ensemble.config import EnsembleConfig
from rab.ensemble.loop import fit, make_optimizer


def check_opacus_compatible(model: nn.Module) -> None:
    """Raise ValueError naming the layers Opacus cannot compute per-sample gradients for."""
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"model is not Opacus-compatible: {[str(e) for e in errors]}")


def fit_private(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    config: EnsembleConfig,
    *,
    device: torch.device,
    noise_seed: int,
) -> float:
    """Train ``model`` (already on ``device``) with DP-SGD; return epsilon at ``config.dp.delta``.

    ``X`` and ``y`` are CPU tensors. Poisson sampling draws from torch's global CPU generator (the
    caller seeds it); the gradient noise comes from a generator seeded with ``noise_seed``.
    """
    dp = config.dp
    if dp is None:
        raise ValueError("fit_private needs config.dp (a DPConfig)")
    check_opacus_compatible(model)
    engine = PrivacyEngine(accountant=dp.accountant)
    private_model, optimizer, loader = engine.make_private(
        module=model,
        optimizer=make_optimizer(model.parameters(), config),
        data_loader=DataLoader(TensorDataset(X, y), batch_size=config.batch_size),
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        noise_generator=torch.Generator(device=device).manual_seed(noise_seed),
    )
    batches = (
        (xb.to(device), yb.to(device)) for _ in range(config.epochs) for xb, yb in loader
    )
    fit(private_model, optimizer, batches, config.num_classes)
    private_model.remove_hooks()
    return float(engine.get_epsilon(dp.delta))
