"""Configuration of a DNN-RAB ensemble (paper section 6.1, Algorithm 1; REFERENCE section 5).

Pure Python: the service validates job parameters with these classes without importing torch.
The presets reproduce the authors' optimiser, epochs, batch size and learning rate per dataset
(their ``attack_lib.py``): Adam without schedule or augmentation, MNIST 20 epochs / batch 128 /
lr 1e-3, CIFAR 10 / 64 / 1e-3, ImageNet 5 / 64 (32 with DP-SGD) / 1e-4. The ``tabular`` preset is
ours (the authors trained no DNN on Spambase).
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from dataclasses import asdict, dataclass, field
from typing import Any

from rab.architectures import NORMALISED_ARCHITECTURES, check_input_shape
from rab.seeds import MAX_SEED, fresh_seed, resolve_seed

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
NORMS: tuple[str, ...] = ("batch", "group")
ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv", "gdp")
DEFAULT_DP_DELTA = 1e-5


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings (section 6.2): per-sample clip norm C and noise multiplier sigma_DP.

    ``delta`` is the delta at which epsilon is reported; ``accountant`` is Opacus' accountant.
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float = DEFAULT_DP_DELTA
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(f"noise_multiplier must be positive, got {self.noise_multiplier}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")


#: The authors' DP-SGD settings (paper section 7.1, Table 4): clip C and noise sigma_DP.
DP_PRESETS: dict[str, DPConfig] = {
    "mnist": DPConfig(noise_multiplier=4.0, max_grad_norm=5.0),
    "cifar": DPConfig(noise_multiplier=0.1, max_grad_norm=100.0),
    "imagenet": DPConfig(noise_multiplier=0.01, max_grad_norm=1000.0),
}

#: Architecture and training hyper-parameters per dataset family.
TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    "mnist": {"arch": "mnist_cnn", "epochs": 20, "batch_size": 128, "lr": 1e-3},
    "cifar": {"arch": "preact_resnet", "epochs": 10, "batch_size": 64, "lr": 1e-3},
    "imagenet": {"arch": "resnet18", "epochs": 5, "batch_size": 64, "lr": 1e-4},
    "tabular": {"arch": "mlp", "epochs": 20, "batch_size": 128, "lr": 1e-3},
}
_DP_BATCH_SIZE = {"imagenet": 32}


@dataclass(frozen=True)
class EnsembleConfig:
    """Everything that determines the N trained models, bit for bit on given hardware.

    Model k is trained on X + d_k with d_k drawn from a generator seeded by ``(seed, k)``
    (see :mod:`rab.ensemble.noise`). ``norm`` selects BatchNorm or GroupNorm in the normalised
    architectures; DP-SGD requires ``"group"``. ``momentum`` applies to ``optimizer="sgd"`` only.
    ``seed`` left out is drawn fresh (:mod:`rab.seeds`) and recorded here.
    ``sigma = 0`` trains plain (unsmoothed) models, which cannot be certified.
    """

    arch: str
    input_shape: tuple[int, ...]
    num_classes: int
    sigma: float
    num_models: int
    epochs: int
    batch_size: int
    lr: float
    seed: int = field(default_factory=fresh_seed)
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    norm: str = "batch"
    dp: DPConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", resolve_seed(self.seed, "seed"))
        try:  # accept numpy scalars, store plain Python numbers (JSON, hashing)
            object.__setattr__(self, "input_shape",
                               tuple(operator.index(s) for s in self.input_shape))
            for name in ("num_classes", "num_models", "epochs", "batch_size", "seed"):
                object.__setattr__(self, name, operator.index(getattr(self, name)))
            for name in ("sigma", "lr", "momentum", "weight_decay"):
                object.__setattr__(self, name, float(getattr(self, name)))
        except TypeError as exc:
            raise ValueError(f"invalid ensemble configuration value: {exc}") from exc
        if not self.input_shape or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be non-empty and positive, got {self.input_shape}")
        check_input_shape(self.arch, self.input_shape)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be finite and >= 0, got {self.sigma}")
        for name in ("num_models", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must lie in [0, 2**63), got {self.seed}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.dp is not None and self.uses_batchnorm:
            raise ValueError("DP-SGD needs per-sample gradients: use norm='group' for "
                             f"{self.arch} (BatchNorm mixes samples of a batch)")

    @property
    def uses_batchnorm(self) -> bool:
        """True when the model has BatchNorm layers (running statistics, no per-sample grads)."""
        return self.norm == "batch" and self.arch in NORMALISED_ARCHITECTURES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (inverse of :meth:`from_dict`)."""
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnsembleConfig:
        """Rebuild a configuration from :meth:`to_dict` output; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ensemble configuration keys: {sorted(unknown)}")
        values = dict(data)
        try:
            if values.get("dp") is not None:
                values["dp"] = DPConfig(**values["dp"])
            values["input_shape"] = tuple(values["input_shape"])
            return cls(**values)
        except (TypeError, KeyError) as exc:
            raise ValueError(f"invalid ensemble configuration: {exc}") from exc

    def member_fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of everything that determines model k, for any k.

        ``num_models`` is left out: model k does not depend on N, so an ensemble can grow from
        100 to 1000 models and keep the first 100.
        """
        settings = self.to_dict()
        del settings["num_models"]
        text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def preset(
    name: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    sigma: float,
    num_models: int,
    seed: int | None = None,
    dp: bool = False,
    **overrides: Any,
) -> EnsembleConfig:
    """The authors' settings for ``name`` (mnist, cifar, imagenet, tabular), overridable.

    ``dp=True`` adds the authors' DP-SGD preset for the dataset (Table 4) and switches the
    normalised architectures to GroupNorm so that Opacus can compute per-sample gradients.
    """
    if name not in TRAINING_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(TRAINING_PRESETS)}")
    values: dict[str, Any] = dict(TRAINING_PRESETS[name])
    if dp:
        if name not in DP_PRESETS:
            raise ValueError(f"no DP-SGD preset for {name!r}; pass dp=DPConfig(...) yourself")
        values.update(dp=DP_PRESETS[name], norm="group")
        values["batch_size"] = _DP_BATCH_SIZE.get(name, values["batch_size"])
    values.update(overrides)
    return EnsembleConfig(
        input_shape=input_shape, num_classes=num_classes, sigma=sigma, num_models=num_models,
        seed=resolve_seed(seed), **values,
    )

