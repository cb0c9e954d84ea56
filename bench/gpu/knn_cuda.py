"""Exact smoothed K-NN on CUDA: the ``bench/bench_knn.py`` datasets with the torch backend.

For each dataset: seconds per test point of ``exact_knn(..., backend="torch")`` (the count
dynamic programme on the GPU, level CDFs on the CPU) against ``backend="numpy"`` on the same
points in the same run, and the largest difference of their probabilities (must be <= 1e-9).
Writes JSON to ``$OUT/knn_cuda.json`` when OUT is set, else ``bench/results/knn_cuda.json``.
The test points are those of ``bench_knn.py``, in its seeded order. The data come from
``--data`` (a folder with ``mnist_01.npz``, ``cifar10_airplane_bird.npz`` and
``spambase.data``: ``../shared/data`` does not travel to a device machine, so copy them into an
ignored folder of the repo), else ``$RAB_SHARED_DATA`` or ``../shared/data``.

Usage: ``python bench/gpu/knn_cuda.py [--data DIR] [--points N] [--numpy-points M]
[--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from bench_knn import DATASETS, NUM_LEVELS, K, load_benchmark_set  # noqa: E402

from rab.knn import default_edges, exact_knn  # noqa: E402


def _per_point(
    run: Any, backend: str, points: np.ndarray, group: int, device: str
) -> tuple[float, np.ndarray]:
    times, probas = [], []
    for s in range(0, len(points), group):
        part = points[s : s + group]
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        probas.append(run(part, backend=backend).proba)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / len(part))
    return statistics.median(times), np.vstack(probas)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--numpy-points", type=int, default=20)
    parser.add_argument("--group", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data", type=Path, help="folder with the three data files")
    args = parser.parse_args()
    if args.data is not None:
        os.environ["RAB_SHARED_DATA"] = str(args.data)  # read by bench_knn's loaders
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    backend = "torch" if args.device == "cuda" else "numpy"
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "k": K,
        "num_levels": NUM_LEVELS,
        "datasets": {},
    }
    for name, (_, sigma, spread) in DATASETS.items():
        X_train, y_train, X_test = load_benchmark_set(name)
        edges = default_edges(X_train.shape[1], sigma, NUM_LEVELS, spread)

        run = partial(exact_knn, X_train, y_train, sigma=sigma, k=K, edges=edges, num_classes=2)
        run(X_test[:2], backend=backend)  # warm-up: chi-square table, CUDA context
        gpu_s, gpu_q = _per_point(run, backend, X_test[: args.points], args.group, args.device)
        cpu_s, cpu_q = _per_point(run, "numpy", X_test[: args.numpy_points], args.group, "cpu")
        report["datasets"][name] = {
            "test_points": args.points,
            "torch_median_s_per_point": gpu_s,
            "numpy_median_s_per_point": cpu_s,
            "numpy_over_torch": cpu_s / gpu_s,
            "max_abs_diff_torch_numpy": float(np.abs(gpu_q[: len(cpu_q)] - cpu_q).max()),
            "max_abs_row_sum_minus_1": float(np.abs(gpu_q.sum(1) - 1.0).max()),
        }
        print(name, json.dumps(report["datasets"][name]), flush=True)
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "knn_cuda.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
