"""Training the N base classifiers of DNN-RAB (paper section 6.1, Algorithm 1 lines 1-6).

- :func:`train_member` trains model k alone on D + d_k and returns its saved bytes, their SHA-256
  and the test-noise seed derived from that digest. Every random choice comes from seeds derived
  from ``(config.seed, k)``, so re-training model k reproduces it bit for bit on the same hardware
  and software (training runs with cuDNN's deterministic, non-benchmarking kernels).
- :func:`train_members_batched` trains several models at once with ``torch.func`` (stacked
  parameters, ``vmap``) to fill a GPU. Each model sees the same noise, initial weights and batch
  order as with :func:`train_member`, and Adam / SGD act element-wise, so it is the same training
  run; only floating-point rounding differs (batched kernels), which the sidecar records.
- :func:`train_ensemble` trains models 0..N-1 into a directory, skipping every model already
  stored with a verified hash, so a crash or a retry never loses or duplicates a finished model.
"""

from __future__ import annotations

import copy
import functools
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from rab.ensemble.artifacts import (
    MemberArtifact,
    data_fingerprint,
    member_complete,
    model_path,
    open_directory,
    write_member,
)
from rab.ensemble.config import EnsembleConfig
from rab.ensemble.loop import epoch_orders, fit, make_optimizer, shuffled_batches
from rab.ensemble.noise import MemberSeeds, member_seeds, training_noise
from rab.nets import build_model, classification_loss

ProgressCallback = Callable[[int, int], None]
_P = ParamSpec("_P")
_R = TypeVar("_R")
#: Upper bound on the GPU memory the stacked noisy training sets of one batched chunk may take.
CHUNK_BYTES = 4 * 2**30
MAX_MODELS_PER_CHUNK = 64


def configure_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: every core this process may run on); return it."""
    count = len(os.sched_getaffinity(0)) if threads is None else threads
    if count < 1:
        raise ValueError(f"threads must be at least 1, got {count}")
    torch.set_num_threads(count)
    return count


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available and CPU otherwise."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_training_data(config: EnsembleConfig, X: np.ndarray, y: np.ndarray) -> None:
    """Raise ValueError unless X is finite float32 (n, *input_shape) and y int64 in 0..C-1."""
    if not isinstance(X, np.ndarray) or X.dtype != np.float32:
        raise ValueError(f"X must be a float32 numpy array, got {getattr(X, 'dtype', type(X))}")
    if X.ndim < 2 or X.shape[1:] != config.input_shape:
        raise ValueError(f"X must have shape (n, *{config.input_shape}), got {X.shape}")
    if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.shape != (len(X),):
        raise ValueError(f"y must be an int64 array of shape ({len(X)},), got "
                         f"{getattr(y, 'dtype', type(y))} {getattr(y, 'shape', '')}")
    if len(X) == 0:
        raise ValueError("the training set is empty")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    if y.min() < 0 or y.max() >= config.num_classes:
        raise ValueError(f"labels must lie in 0..{config.num_classes - 1}, "
                         f"got {y.min()}..{y.max()}")


def deterministic_kernels(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with cuDNN restricted to deterministic algorithms and autotuning off."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False,
                                        deterministic=True,
                                        allow_tf32=torch.backends.cudnn.allow_tf32):
            return fn(*args, **kwargs)

    return wrapper


def serialize_state_dict(model: nn.Module) -> bytes:
    """``torch.save`` bytes of the model's state_dict, on the CPU with unshared storages."""
    state = {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _architecture(config: EnsembleConfig) -> nn.Module:
    """A fresh base classifier of ``config`` (drawn from torch's global generator)."""
    return build_model(config.arch, config.input_shape, config.num_classes, norm=config.norm)


def initial_model(config: EnsembleConfig, seeds: MemberSeeds) -> nn.Module:
    """Model k's initial weights, drawn from torch's CPU generator seeded with ``seeds.init``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.init)
        return _architecture(config)


def trained_model(config: EnsembleConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """The architecture of ``config`` holding the trained ``state``: built on the meta device
    (no weights allocated, nothing drawn) and given the state's tensors, so a loaded member
    costs no initialisation that its weights would overwrite (``initial_model`` is for
    training). ValueError if the state misses a parameter or buffer of the architecture."""
    with torch.device("meta"):
        model = _architecture(config)
    model.load_state_dict(state, assign=True)
    missing = [name for name, t in (*model.named_parameters(), *model.named_buffers())
               if t.is_meta]
    if missing:
        raise ValueError(f"the stored state lacks {missing}")
    return model


def _noisy_copy(config: EnsembleConfig, X: np.ndarray, seeds: MemberSeeds) -> torch.Tensor:
    """X + d_k as a CPU tensor (Algorithm 1 lines 2-3)."""
    noisy = training_noise(seeds, X.shape, config.sigma)
    noisy += X
    return torch.from_numpy(noisy)


def _meta(config: EnsembleConfig, seeds: MemberSeeds, device: torch.device, trainer: str,
          seconds: float, epsilon: float | None) -> dict[str, Any]:
    return {
        "job_seed": seeds.job_seed,
        "training_seed": [seeds.job_seed, seeds.index],
        "epochs": config.epochs,
        "member_fingerprint": config.member_fingerprint(),
        "dp_epsilon": epsilon,
        "dp_delta": None if config.dp is None else config.dp.delta,
        "trainer": trainer,
        "device": device.type,
        "torch_version": torch.__version__,
        "train_seconds": round(seconds, 3),
    }


@deterministic_kernels
def train_member(
    config: EnsembleConfig,
    X: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    device: str | torch.device | None = None,
) -> MemberArtifact:
    """Train model ``k`` on X + d_k (eq. 20) and return its artefact (bytes, sha256, noise seed).

    With ``config.dp`` set the model is trained with DP-SGD and ``meta["dp_epsilon"]`` holds its
    epsilon at ``config.dp.delta``.
    """
    check_training_data(config, X, y)
    dev = resolve_device(device)
    seeds = member_seeds(config.seed, k)
    start = time.perf_counter()
    noisy = _noisy_copy(config, X, seeds)
    labels = torch.tensor(y)  # a copy: y may be a read-only array
    model = initial_model(config, seeds).to(dev)
    epsilon = None
    if config.dp is None:
        shuffle = torch.Generator().manual_seed(seeds.shuffle)
        batches = shuffled_batches(noisy.to(dev), labels.to(dev), batch_size=config.batch_size,
                                   epochs=config.epochs, generator=shuffle)
        fit(model, make_optimizer(model.parameters(), config), batches, config.num_classes)
    else:
        from rab.ensemble.dp import fit_private  # Opacus takes ~1.5 s to import

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds.shuffle)  # Opacus' Poisson sampler uses the global generator
            epsilon = fit_private(model, noisy, labels, config, device=dev, noise_seed=seeds.dp)
    meta = _meta(config, seeds, dev, "loop", time.perf_counter() - start, epsilon)
    return MemberArtifact.from_bytes(k, serialize_state_dict(model), meta)


def stacked_initial_models(config: EnsembleConfig, seeds: Sequence[MemberSeeds],
                           device: torch.device
                           ) -> tuple[list[nn.Module], dict[str, torch.Tensor], nn.Module]:
    """The seeded initial models of ``seeds`` (to receive their trained weights), the same as
    one set of stacked trainable parameters on ``device``, and a storage-free ("meta") copy of
    the architecture for ``functional_call``; ValueError for a model with buffers (BatchNorm),
    which cannot be trained stacked."""
    models = [initial_model(config, s) for s in seeds]
    stacked, buffers = stack_module_state(models)
    if buffers:
        raise ValueError(f"batched training needs a model without buffers; {config.arch} with "
                         f"norm={config.norm!r} has {sorted(buffers)}")
    params = {name: p.detach().to(device).requires_grad_() for name, p in stacked.items()}
    return models, params, copy.deepcopy(models[0]).to("meta")


@deterministic_kernels
def train_members_batched(
    config: EnsembleConfig,
    X: np.ndarray,
    y: np.ndarray,
    ks: Sequence[int],
    *,
    device: str | torch.device | None = None,
) -> list[MemberArtifact]:
    """Train models ``ks`` together: parameters stacked along a model axis, forward by ``vmap``.

    Supports models without buffers (no BatchNorm: use ``norm="group"``) and no DP-SGD. The loss is
    the sum of the models' mean losses, so each model's gradient is its own; the optimiser acts
    element-wise on the stacked parameters, i.e. as one optimiser per model.
    """
    check_training_data(config, X, y)
    if config.dp is not None:
        raise ValueError("batched training does not support DP-SGD; use train_member")
    dev = resolve_device(device)
    seeds = [member_seeds(config.seed, k) for k in ks]
    start = time.perf_counter()
    models, params, skeleton = stacked_initial_models(config, seeds, dev)
    noisy = torch.stack([_noisy_copy(config, X, s) for s in seeds]).to(dev)
    labels = torch.tensor(y, device=dev)

    def member_loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return classification_loss(functional_call(skeleton, p, (xb,)), yb, config.num_classes)

    batched_loss = torch.vmap(member_loss)
    optimizer = make_optimizer(params.values(), config)
    orders = [epoch_orders(len(X), config.epochs, torch.Generator().manual_seed(s.shuffle))
              for s in seeds]
    rows = torch.arange(len(seeds), device=dev)[:, None]
    for epoch_order in zip(*orders, strict=True):
        order = torch.stack(epoch_order).to(dev)
        for begin in range(0, len(X), config.batch_size):
            idx = order[:, begin : begin + config.batch_size]
            loss = batched_loss(params, noisy[rows, idx], labels[idx]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    seconds = (time.perf_counter() - start) / len(seeds)
    artifacts = []
    for m, (model, s) in enumerate(zip(models, seeds, strict=True)):
        model.load_state_dict({name: p[m].detach() for name, p in params.items()})
        meta = _meta(config, s, dev, f"vmap[{len(seeds)}]", seconds, None)
        meta["batch_members"] = list(ks)  # retraining model k bit for bit needs this batch
        artifacts.append(MemberArtifact.from_bytes(s.index, serialize_state_dict(model), meta))
    return artifacts


def models_per_chunk(
    config: EnsembleConfig, n: int, device: torch.device, requested: int | None = None
) -> int:
    """How many models to train at once: 1 when batching is unsupported (DP-SGD, BatchNorm),
    else ``requested`` if given, else 1 on CPU and as many as fit ``CHUNK_BYTES`` of stacked
    noisy training sets on a GPU (at most 64)."""
    if requested is not None and requested < 1:
        raise ValueError(f"chunk must be at least 1, got {requested}")
    if config.dp is not None or config.uses_batchnorm:
        return 1
    if requested is not None:
        return requested
    if device.type == "cpu":
        return 1
    per_model = 4 * n * int(np.prod(config.input_shape))
    return int(max(1, min(MAX_MODELS_PER_CHUNK, CHUNK_BYTES // per_model)))


def train_members(
    config: EnsembleConfig,
    X: np.ndarray,
    y: np.ndarray,
    ks: Sequence[int],
    *,
    device: str | torch.device | None = None,
    chunk: int | None = None,
) -> Iterator[MemberArtifact]:
    """Train models ``ks`` in order, at most ``chunk`` at a time (:func:`models_per_chunk`),
    yielding each artefact as soon as its chunk is trained. A chunk of more than one model uses
    :func:`train_members_batched` (same seeds, so the same noisy copies d_k of eq. 20)."""
    dev = resolve_device(device)
    size = models_per_chunk(config, len(X), dev, chunk)
    for begin in range(0, len(ks), size):
        part = list(ks[begin : begin + size])
        if len(part) == 1:
            yield train_member(config, X, y, part[0], device=dev)
        else:
            yield from train_members_batched(config, X, y, part, device=dev)


def train_ensemble(
    config: EnsembleConfig,
    X: np.ndarray,
    y: np.ndarray,
    out_dir: str | Path,
    *,
    progress: ProgressCallback | None = None,
    device: str | torch.device | None = None,
    chunk: int | None = None,
    cpu_threads: int | None = None,
) -> list[Path]:
    """Train models 0..N-1 into ``out_dir``, skipping those already stored; return their paths.

    ``progress(done, N)`` is called once at the start and after every stored model. At most
    ``chunk`` models are trained at a time (:func:`models_per_chunk`); a chunk of more than one
    uses :func:`train_members_batched`. On the CPU torch uses ``cpu_threads`` threads (default:
    every usable core). Raises ValueError if ``out_dir`` holds models trained
    with another configuration or training set.
    """
    check_training_data(config, X, y)
    out = Path(out_dir)
    open_directory(out, config, data_fingerprint(X, y))
    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_cpu_threads(cpu_threads)
    todo = [k for k in range(config.num_models) if not member_complete(out, k)]
    done = config.num_models - len(todo)
    if progress is not None:
        progress(done, config.num_models)
    for artifact in train_members(config, X, y, todo, device=dev, chunk=chunk):
        write_member(out, artifact)
        done += 1
        if progress is not None:
            progress(done, config.num_models)
    return [model_path(out, k) for k in range(config.num_models)]
