"""Evaluating trained DNN-RAB models: h~_k(x) = h_k(x + u_k) (paper section 6.1).

u_k is the model-deterministic test-time noise, drawn from a generator seeded by the SHA-256 of
model k's saved bytes (:func:`rab.ensemble.noise.inference_noise`). Models are loaded with
``torch.load(weights_only=True)`` and evaluated one at a time, so N may exceed what fits in memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rab.ensemble.artifacts import MemberArtifact, read_config, read_member
from rab.ensemble.config import EnsembleConfig
from rab.ensemble.noise import inference_noise
from rab.ensemble.train import resolve_device, trained_model
from rab.ensemble.vote import VoteMatrices
from rab.nets import logits_to_class, logits_to_proba


@dataclass(frozen=True)
class Member:
    """A loaded model in eval mode with its test-time noise u_k, on one device."""

    index: int
    sha256: str
    model: nn.Module = field(repr=False)
    noise: torch.Tensor = field(repr=False)


def load_member(
    artifact: MemberArtifact, config: EnsembleConfig, *, device: str | torch.device | None = None
) -> Member:
    """Model k from its artefact (hash verified on construction; the architecture given the
    stored weights, no initialisation drawn) and its u_k."""
    dev = resolve_device(device)
    state = torch.load(io.BytesIO(artifact.state_dict_bytes), map_location="cpu",
                       weights_only=True)
    model = trained_model(config, state)
    noise = inference_noise(artifact.noise_seed, config.input_shape, config.sigma)
    return Member(artifact.index, artifact.sha256, model.to(dev).eval(),
                  torch.from_numpy(noise).to(dev))


def iter_members(
    out_dir: str | Path, *, device: str | torch.device | None = None, num_models: int | None = None
) -> Iterator[Member]:
    """Load models 0..N-1 of an ensemble directory one by one (N from its manifest by default)."""
    config = read_config(Path(out_dir))
    count = config.num_models if num_models is None else num_models
    for k in range(count):
        yield load_member(read_member(Path(out_dir), k), config, device=device)


def check_inputs(X_test: np.ndarray, config: EnsembleConfig) -> None:
    """ValueError unless ``X_test`` is float32 (m, *input_shape)."""
    if X_test.dtype != np.float32 or X_test.shape[1:] != config.input_shape:
        raise ValueError(f"X_test must be float32 (m, *{config.input_shape}), got "
                         f"{X_test.dtype} {X_test.shape}")


@torch.no_grad()
def predict_votes(
    members: Iterable[Member],
    X_test: np.ndarray,
    config: EnsembleConfig,
    *,
    batch_size: int = 1024,
) -> VoteMatrices:
    """Hard and soft votes of every member on every test point, each on x + u_k (eq. 19).

    ``X_test`` is float32 (m, *input_shape). The hard vote comes from the logits (binary: z > 0),
    the soft vote is the class-probability vector.
    """
    check_inputs(X_test, config)
    X = torch.tensor(X_test)  # a copy: X_test may be a read-only array
    hard, soft, digests = [], [], []
    for member in members:
        device = member.noise.device
        labels, probas = [], []
        for begin in range(0, len(X), batch_size):
            logits = member.model(X[begin : begin + batch_size].to(device) + member.noise)
            labels.append(logits_to_class(logits, config.num_classes).cpu())
            probas.append(logits_to_proba(logits, config.num_classes).float().cpu())
        hard.append(torch.cat(labels).numpy().astype(np.int64))
        soft.append(torch.cat(probas).numpy())
        digests.append(member.sha256)
    if not digests:
        raise ValueError("no models to vote")
    return VoteMatrices(np.stack(hard), np.stack(soft), tuple(digests), config.sigma)
