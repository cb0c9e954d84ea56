"""Partition aggregation benchmark: base-model training throughput on CPU, certification time.

1. Throughput in base models per minute of the MNIST CNN on DPA partitions of all of MNIST
   (k = 1,200 content-hash partitions of the 60,000 training images, about 50 images each; the
   first ``--models`` partitions, ``--epochs`` epochs, batch 16, Adam lr 1e-3, sigma = 0):
   the library's stacked trainer (``rab.partition.train_subsets_batched``, all models at once),
   the library's one-model loop (``train_subset``), and a plain PyTorch loop training the same
   models one by one (model, Adam, randperm batches, nothing else), interleaved in the same run,
   ``--repeats`` times; medians and the ratio library / plain.
2. Certification time per test input: DPA (k = 1,200) and FA (k = 1,200, d = 16) certificates
   from votes, the votes of the base models (measured on the trained models, extrapolated to
   1,200 linearly), and the plain 5-NN poison count on the 60,000 training images.

Writes ``bench/results/partition.json``. Default run: about 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rab.data import load_npz
from rab.ensemble.config import EnsembleConfig, preset
from rab.ensemble.predict import load_member, predict_votes
from rab.ensemble.train import configure_cpu_threads
from rab.nets import build_model, classification_loss
from rab.partition import (
    PartitionScheme,
    dpa_certificate,
    fa_certificate,
    plain_knn_certificate,
    train_subset,
    train_subsets_batched,
)
from rab.partition.train import BASE_MODEL_CPU_THREADS

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "partition.json"
K = 1200


def shared_data() -> Path:
    return Path(os.environ.get("RAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def base_config(num_models: int, epochs: int) -> EnsembleConfig:
    return preset("mnist", input_shape=(1, 28, 28), num_classes=10, sigma=0.0,
                  num_models=num_models, seed=0, epochs=epochs, batch_size=16)


def plain_loop(config: EnsembleConfig, X: np.ndarray, y: np.ndarray) -> None:
    """The baseline: one model, Adam, shuffled mini-batches, nothing else."""
    model = build_model(config.arch, config.input_shape, config.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    data, labels = torch.from_numpy(X), torch.from_numpy(y)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(data))
        for begin in range(0, len(data), config.batch_size):
            idx = order[begin : begin + config.batch_size]
            loss = classification_loss(model(data[idx]), labels[idx], config.num_classes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def per_minute(count: int, seconds: float) -> float:
    return 60.0 * count / seconds


def throughput(X: np.ndarray, y: np.ndarray, subsets: list[np.ndarray], models: int,
               epochs: int, repeats: int) -> tuple[dict[str, Any], list[Any]]:
    config = base_config(models, epochs)
    chosen = list(range(models))
    runs: dict[str, list[float]] = {"library_stacked": [], "library_loop": [], "plain_loop": []}
    artifacts: list[Any] = []
    for _ in range(repeats):
        start = time.perf_counter()
        artifacts = train_subsets_batched(config, X, y, [subsets[i] for i in chosen], chosen,
                                          device="cpu")
        runs["library_stacked"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in chosen:
            train_subset(config, X, y, subsets[i], i, device="cpu")
        runs["library_loop"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in chosen:
            plain_loop(config, X[subsets[i]], y[subsets[i]])
        runs["plain_loop"].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in runs.items()}
    rate = {name: per_minute(models, s) for name, s in medians.items()}
    out = {
        "models": models, "epochs": epochs, "batch_size": config.batch_size,
        "mean_partition_size": float(np.mean([len(subsets[i]) for i in chosen])),
        "seconds": runs, "median_seconds": medians, "models_per_minute": rate,
        "ratio_stacked_over_plain": rate["library_stacked"] / rate["plain_loop"],
        "ratio_loop_over_plain": rate["library_loop"] / rate["plain_loop"],
        "extrapolated_minutes_k1200": {name: K / r for name, r in rate.items()},
    }
    return out, artifacts


def timed(fn: Any, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def certification(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, artifacts: list[Any],
                  config: EnsembleConfig) -> dict[str, Any]:
    m = len(X_test)
    rng = np.random.default_rng(0)
    dpa_votes = rng.integers(0, 10, size=(K, m))
    fa = PartitionScheme(K, "fa", 16)
    fa_votes = rng.integers(0, 10, size=(fa.num_classifiers, m))
    spread = fa.buckets_of_classifiers()
    members = [load_member(a, config, device="cpu") for a in artifacts]
    vote_seconds = timed(lambda: predict_votes(members, X_test, config), 3)
    knn_points = X_test[:10]
    knn_seconds = timed(lambda: plain_knn_certificate(X, y, knn_points, k=5, num_classes=10), 1)
    return {
        "test_inputs": m,
        "dpa_certificate_ms_per_input": 1e3 * timed(lambda: dpa_certificate(dpa_votes, 10)) / m,
        "fa_d16_certificate_ms_per_input":
            1e3 * timed(lambda: fa_certificate(fa_votes, spread, 10), 1) / m,
        "votes_ms_per_input_per_model": 1e3 * vote_seconds / m / len(members),
        "votes_ms_per_input_k1200": 1e3 * vote_seconds / m / len(members) * K,
        "plain_knn_count_ms_per_input_n60000": 1e3 * knn_seconds / len(knn_points),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    threads = configure_cpu_threads(BASE_MODEL_CPU_THREADS)
    data = load_npz(shared_data() / "mnist.npz")
    X, y = np.asarray(data.X_train), np.asarray(data.y_train)
    start = time.perf_counter()
    subsets = PartitionScheme(K).subsets(X, y)
    hashing = time.perf_counter() - start
    train, artifacts = throughput(X, y, subsets, args.models, args.epochs, args.repeats)
    cert = certification(X, y, np.asarray(data.X_test[:200]), artifacts,
                         base_config(args.models, args.epochs))
    record = {
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                    "torch": torch.__version__, "threads": threads},
        "partition_hashing_seconds_60000": hashing,
        "partition_sizes_k1200": {"min": min(map(len, subsets)), "max": max(map(len, subsets))},
        "training": train,
        "certification": cert,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
