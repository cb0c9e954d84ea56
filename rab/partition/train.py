"""Training the base models of a partition aggregation (DPA / FA) into a resumable directory.

```
out_dir/partition.json      manifest: PartitionConfig, content fingerprint of the training set,
                            the chunk size the models were trained with
out_dir/model_00000.pt      base model 0 (torch.save state_dict bytes; empty for an empty subset)
out_dir/model_00000.json    sidecar: sha256, seeds, subset size and sha256, trainer, ...
```

The files are those of ``rab.ensemble.artifacts`` (atomic writes, a model counts as done only when
its bytes hash to its sidecar's sha256).  Base model i trains on its subset
(``PartitionScheme.subsets``, rows in digest order) from seeds derived from ``(seed, i)``
(``rab.ensemble.noise.member_seeds``) with the ensemble's architectures, optimiser and batch order
and no noise (sigma = 0).  An empty subset gives no model: the classifier abstains
(``rab.partition.certificate.NO_VOTE``), which the certificates account for.

Models are trained ``chunk`` at a time, chunks being fixed ranges of indices.  A chunk of one
model uses the ensemble's training loop (``rab.ensemble.loop``); a larger chunk trains its models
together (:func:`train_subsets_batched`: stacked parameters, ``vmap``, per-model step masks), the
same training runs up to floating-point rounding.  Rerunning skips finished models and retrains a
chunk with any missing model whole (writing only the missing ones), with the chunk size recorded
in the manifest, so an interrupted run resumes to byte-identical models on the same hardware and
software.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from rab.ensemble.artifacts import (
    MemberArtifact,
    atomic_write,
    member_complete,
    model_path,
    write_member,
)
from rab.ensemble.config import EnsembleConfig
from rab.ensemble.loop import epoch_orders, fit, make_optimizer, shuffled_batches
from rab.ensemble.noise import MemberSeeds, member_seeds
from rab.ensemble.train import (
    check_training_data,
    configure_cpu_threads,
    deterministic_kernels,
    initial_model,
    resolve_device,
    serialize_state_dict,
    stacked_initial_models,
)
from rab.nets import classification_loss
from rab.partition.config import PartitionConfig
from rab.partition.optim import MaskedOptimizer, steps_per_epoch

__all__ = [
    "MANIFEST",
    "content_fingerprint",
    "partition_chunk",
    "read_partition_config",
    "train_missing",
    "train_partition",
    "train_subset",
    "train_subsets_batched",
]

MANIFEST = "partition.json"
FORMAT_VERSION = 1
#: Models trained together by default on a GPU (on a CPU one at a time: stacking the small
#: CNN's convolutions was about 4x slower there, bench/results/partition.json; 1 for BatchNorm).
GPU_CHUNK = 32
#: torch's CPU threads for base models: a step on a few dozen images is too small to split, and
#: on a busy machine two threads wait on each other (the MNIST CNN on 50 images, 30 epochs:
#: 0.59 s with one thread against 10 s with two, measured on the 2-core CI machine under load).
BASE_MODEL_CPU_THREADS = 1
ProgressCallback = Callable[[int, int], None]


def content_fingerprint(X: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of the sorted content digests: the training set as a multiset (any row order)."""
    from rab.partition.hashing import content_digests

    digest = hashlib.sha256()
    for item in sorted(content_digests(X, y)):
        digest.update(item)
    return digest.hexdigest()


def _meta(base: EnsembleConfig, seeds: MemberSeeds, rows: np.ndarray, X: np.ndarray,
          y: np.ndarray, trainer: str, device: torch.device, seconds: float) -> dict[str, Any]:
    return {
        "job_seed": seeds.job_seed,
        "training_seed": [seeds.job_seed, seeds.index],
        "member_fingerprint": base.member_fingerprint(),
        "train_size": len(rows),
        "subset_sha256": content_fingerprint(X[rows], y[rows]) if len(rows) else None,
        "empty": not len(rows),
        "trainer": trainer,
        "device": device.type,
        "torch_version": torch.__version__,
        "train_seconds": round(seconds, 3),
    }


def _empty(base: EnsembleConfig, index: int, X: np.ndarray, y: np.ndarray) -> MemberArtifact:
    rows = np.zeros(0, dtype=np.int64)
    meta = _meta(base, member_seeds(base.seed, index), rows, X, y, "none", torch.device("cpu"), 0)
    return MemberArtifact.from_bytes(index, b"", meta)


@deterministic_kernels
def train_subset(
    base: EnsembleConfig, X: np.ndarray, y: np.ndarray, rows: np.ndarray, index: int, *,
    device: str | torch.device | None = None,
) -> MemberArtifact:
    """Base model ``index`` trained alone on rows ``rows`` of (X, y), the ensemble's loop."""
    if not len(rows):
        return _empty(base, index, X, y)
    dev = resolve_device(device)
    seeds = member_seeds(base.seed, index)
    start = time.perf_counter()
    model = initial_model(base, seeds).to(dev)
    shuffle = torch.Generator().manual_seed(seeds.shuffle)
    batches = shuffled_batches(torch.from_numpy(X[rows]).to(dev), torch.from_numpy(y[rows]).to(dev),
                               batch_size=base.batch_size, epochs=base.epochs, generator=shuffle)
    fit(model, make_optimizer(model.parameters(), base), batches, base.num_classes)
    meta = _meta(base, seeds, rows, X, y, "loop", dev, time.perf_counter() - start)
    return MemberArtifact.from_bytes(index, serialize_state_dict(model), meta)


@deterministic_kernels
def train_subsets_batched(
    base: EnsembleConfig, X: np.ndarray, y: np.ndarray, subsets: Sequence[np.ndarray],
    indices: Sequence[int], *, device: str | torch.device | None = None,
) -> list[MemberArtifact]:
    """Base models ``indices`` trained together, model j on rows ``subsets[j]`` (non-empty).

    Subsets are padded to the largest; at every step each model takes its own next batch (its
    own seeded epoch order, the last batch smaller), padded rows weigh 0, its loss is the mean
    over its real rows, and :class:`~rab.partition.optim.MaskedOptimizer` steps only the models
    whose epoch still has a batch.  Needs a model without buffers (no BatchNorm).
    """
    sizes = [len(rows) for rows in subsets]
    if len(sizes) != len(indices) or not sizes or min(sizes) < 1:
        raise ValueError("need one non-empty subset per model index")
    dev = resolve_device(device)
    seeds = [member_seeds(base.seed, i) for i in indices]
    start = time.perf_counter()
    models, params, skeleton = stacked_initial_models(base, seeds, dev)
    count, widest = len(sizes), max(sizes)
    data = torch.zeros((count, widest, *base.input_shape))
    labels = torch.zeros((count, widest), dtype=torch.int64)
    for j, rows in enumerate(subsets):
        data[j, : len(rows)] = torch.from_numpy(X[rows])
        labels[j, : len(rows)] = torch.from_numpy(y[rows])
    data, labels = data.to(dev), labels.to(dev)

    def member_loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
                    wb: torch.Tensor) -> torch.Tensor:
        logits = functional_call(skeleton, p, (xb,))
        return (classification_loss(logits, yb, base.num_classes, "none") * wb).sum()

    batched_loss = torch.vmap(member_loss)
    optimizer = MaskedOptimizer(list(params.values()), base)
    orders = [epoch_orders(n, base.epochs, torch.Generator().manual_seed(s.shuffle))
              for n, s in zip(sizes, seeds, strict=True)]
    width = base.batch_size
    span = max(steps_per_epoch(sizes, width)) * width
    rows_axis = torch.arange(count, device=dev)[:, None]
    for _ in range(base.epochs):
        order = torch.full((count, span), -1, dtype=torch.int64)
        for j, epoch in enumerate(orders):
            order[j, : sizes[j]] = next(epoch)
        order = order.to(dev)
        for begin in range(0, span, width):
            idx = order[:, begin : begin + width]
            valid = idx >= 0
            real = valid.sum(dim=1)
            weights = valid.to(data.dtype) / real.clamp(min=1)[:, None].to(data.dtype)
            safe = idx.clamp(min=0)
            loss = batched_loss(params, data[rows_axis, safe], labels[rows_axis, safe],
                                weights).sum()
            grads = torch.autograd.grad(loss, list(params.values()))
            optimizer.step(grads, real > 0)
    seconds = (time.perf_counter() - start) / count
    out = []
    for j, (model, s) in enumerate(zip(models, seeds, strict=True)):
        model.load_state_dict({name: p[j].detach() for name, p in params.items()})
        meta = _meta(base, s, np.asarray(subsets[j]), X, y, f"vmap[{count}]", dev, seconds)
        meta["batch_members"] = list(indices)
        out.append(MemberArtifact.from_bytes(s.index, serialize_state_dict(model), meta))
    return out


def _train_chunk(base: EnsembleConfig, X: np.ndarray, y: np.ndarray,
                 subsets: Sequence[np.ndarray], indices: Sequence[int], device: torch.device
                 ) -> list[MemberArtifact]:
    """Artefacts of ``indices``: empty subsets abstain, one model alone, more together."""
    full = [i for i in indices if len(subsets[i])]
    if len(full) == 1:
        trained = [train_subset(base, X, y, subsets[full[0]], full[0], device=device)]
    elif full:
        trained = train_subsets_batched(base, X, y, [subsets[i] for i in full], full,
                                        device=device)
    else:
        trained = []
    by_index = {a.index: a for a in trained}
    return [by_index[i] if i in by_index else _empty(base, i, X, y) for i in indices]


def _open(out: Path, config: PartitionConfig, data_sha256: str, chunk: int | None,
          device: torch.device) -> int:
    """Create or check the manifest; return the chunk size to train with."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    wanted = {"format": FORMAT_VERSION, "config": config.to_dict(),
              "fingerprint": config.fingerprint(), "data_sha256": data_sha256}
    if path.is_file():
        found = json.loads(path.read_text())
        for key in ("fingerprint", "data_sha256"):
            if found.get(key) != wanted[key]:
                raise ValueError(f"{out} holds base models with another {key} "
                                 f"({found.get(key)} != {wanted[key]}); use a new directory")
        if chunk is None or chunk == found["chunk"]:
            return int(found["chunk"])
    size = partition_chunk(config.base, device, chunk)
    atomic_write(path, (json.dumps({**wanted, "chunk": size}, indent=1, sort_keys=True)
                        + "\n").encode())
    return size


def read_partition_config(out_dir: str | Path) -> PartitionConfig:
    """The configuration recorded in a partition directory's manifest."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{out_dir} has no {MANIFEST}: not a partition directory")
    return PartitionConfig.from_dict(json.loads(path.read_text())["config"])


def train_partition(
    config: PartitionConfig,
    X: np.ndarray,
    y: np.ndarray,
    out_dir: str | Path,
    *,
    progress: ProgressCallback | None = None,
    device: str | torch.device | None = None,
    chunk: int | None = None,
    cpu_threads: int | None = BASE_MODEL_CPU_THREADS,
) -> list[Path]:
    """Train every base model into ``out_dir``, skipping finished ones; return their paths.

    ``progress(done, M)`` is called at the start and after each stored model.  ``chunk``: models
    trained at a time (default: the manifest's, else 1 on a CPU and :data:`GPU_CHUNK` on a GPU;
    1 for BatchNorm).  ``cpu_threads``: torch's threads on a CPU (default
    :data:`BASE_MODEL_CPU_THREADS`; None: every core).
    Raises ValueError if ``out_dir`` holds models of another configuration or training set (as
    a multiset: the row order does not matter).
    """
    check_training_data(config.base, X, y)
    out = Path(out_dir)
    dev = resolve_device(device)
    size = _open(out, config, content_fingerprint(X, y), chunk, dev)
    total = config.scheme.num_classifiers
    stored = {i for i in range(total) if member_complete(out, i)}
    done = len(stored)
    if progress is not None:
        progress(done, total)
    for artifact in train_missing(config, X, y, range(total), stored, size, device=dev,
                                  cpu_threads=cpu_threads):
        write_member(out, artifact)
        done += 1
        if progress is not None:
            progress(done, total)
    return [model_path(out, i) for i in range(total)]


def partition_chunk(base: EnsembleConfig, device: torch.device, chunk: int | None = None) -> int:
    """Models trained at a time: ``chunk`` if given, else 1 on a CPU and :data:`GPU_CHUNK` on a
    GPU; always 1 for BatchNorm (no stacked training)."""
    size = (GPU_CHUNK if device.type != "cpu" else 1) if chunk is None else chunk
    if size < 1:
        raise ValueError(f"chunk must be at least 1, got {size}")
    return 1 if base.uses_batchnorm else size


def train_missing(
    config: PartitionConfig, X: np.ndarray, y: np.ndarray, wanted: Iterable[int],
    stored: Container[int], size: int, *, device: str | torch.device | None = None,
    cpu_threads: int | None = BASE_MODEL_CPU_THREADS,
) -> Iterator[MemberArtifact]:
    """Artefacts of the base models in ``wanted`` not in ``stored``, in index order, each
    yielded as soon as its chunk is trained.  Chunks are the fixed index ranges
    ``[j size, (j + 1) size)``: a chunk with a missing model is retrained whole (the others'
    artefacts dropped), so the models are those :func:`train_partition` with chunk ``size``
    makes, whoever trains which range (the service's workers train ranges of indices).
    ``cpu_threads``: torch's threads on a CPU while a chunk trains (restored afterwards;
    None: every core)."""
    dev = resolve_device(device)
    missing = sorted(i for i in {int(i) for i in wanted} if i not in stored)
    if not missing:
        return
    subsets = config.scheme.subsets(X, y)
    total = config.scheme.num_classifiers
    if missing[0] < 0 or missing[-1] >= total:
        raise ValueError(f"base model indices must lie in 0..{total - 1}")
    for begin in sorted({i // size * size for i in missing}):
        indices = list(range(begin, min(begin + size, total)))
        with _threads(dev, cpu_threads):
            trained = _train_chunk(config.base, X, y, subsets, indices, dev)
        yield from (a for a in trained if a.index in missing)


@contextmanager
def _threads(device: torch.device, threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` (None: every core) on a CPU, then restored."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    configure_cpu_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
