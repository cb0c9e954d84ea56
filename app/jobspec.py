"""A job's parameters as library objects: its backdoor attack and its ensemble configuration.

Pure functions of the stored job (parameters, seed, dataset shape), used by the API to validate
before queueing and by every worker to poison, train and vote, so that all of them agree on the
poisoned rows and on model k. Torch-free (``rab.evaluation.attack``, ``rab.ensemble.config``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rab.ensemble.certify import VoteKind
from rab.ensemble.config import DPConfig, EnsembleConfig
from rab.evaluation import AttackSpec

VOTES: dict[str, VoteKind] = {"clopper-pearson": "hard", "hoeffding": "soft"}


def default_arch(input_shape: Sequence[int]) -> str:
    """The paper's architecture for an input shape (ValueError when there is none)."""
    shape = tuple(input_shape)
    if len(shape) == 1:
        return "mlp"
    if shape == (1, 28, 28):
        return "mnist_cnn"
    if len(shape) == 3 and shape[0] == 3:
        return "preact_resnet"
    raise ValueError(f"no default architecture for inputs of shape {shape}; set params.arch")


def ensemble_config(
    params: dict[str, Any], input_shape: Sequence[int], num_classes: int, seed: int
) -> EnsembleConfig:
    """The ``EnsembleConfig`` of a job (raises ``ValueError`` naming a bad combination)."""
    arch = params.get("arch") or default_arch(input_shape)
    dp = None
    if params.get("dp_noise_multiplier") is not None:
        dp = DPConfig(
            noise_multiplier=params["dp_noise_multiplier"],
            max_grad_norm=params["dp_max_grad_norm"],
        )
    return EnsembleConfig(
        arch=arch, input_shape=tuple(input_shape), num_classes=num_classes,
        sigma=params["sigma"], num_models=params["num_models"], epochs=params["epochs"],
        batch_size=params["batch_size"], lr=params["lr"], seed=seed, dp=dp,
        norm="group" if dp is not None else "batch",
    )


def attack_spec(attack: dict[str, Any], seed: int) -> AttackSpec:
    """The ``rab.evaluation`` attack of a job's ``attack`` field; the job seed draws the
    poisoned rows (ValueError naming a bad value; ``positions`` are checked against the input
    shape by ``AttackSpec.trigger``). Jobs stored before ``positions`` existed lack the key."""
    return AttackSpec(
        kind=attack["pattern"], norm=attack["norm"], rate=attack["poison_fraction"],
        target=attack["target"], seed=seed, positions=attack.get("positions"),
    )
