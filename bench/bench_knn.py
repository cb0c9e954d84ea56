"""Exact smoothed K-NN benchmark (Theorem 3): seconds per test point, K = 5, L = 200.

Datasets (features: images in [0, 1] pixels, Spambase raw):
  (a) MNIST 0/1, all 12,665 training points, d = 784, sigma = 1;
  (b) CIFAR-10 airplane/bird, all 10,000 training points, d = 3,072, sigma = 0.5;
  (c) Spambase, seeded 80 % split (3,680 training points), d = 57, sigma = 1, spread = 0.1.

For each: ``rab.knn.exact_knn`` on groups of test points from a seeded random sample of the
test set (median and mean wall and CPU seconds per point over the groups; the shared
chi-square table is built by a warm-up call, timed separately); in the
same run the straightforward implementation (``rab.knn.reference``: scipy ncx2.cdf per point
and level, DP in a Python loop) and the Monte Carlo estimator with 1,000 draws on a few points,
as ratios to the exact median, plus the largest difference between exact and straightforward
probabilities.  Writes ``bench/results/knn.json``.

Usage: ``python bench/bench_knn.py [--quick] [--points N] [--threads T] [--datasets mnist ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from rab.knn import default_edges, exact_knn, monte_carlo_knn_proba
from rab.knn.reference import reference_knn_proba

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "knn.json"
K = 5
NUM_LEVELS = 200
TARGETS = {"mnist01": 0.05, "cifar_airplane_bird": 0.1, "spambase": 0.01}
PAPER_SECONDS_CIFAR = 60.0


def shared_data() -> Path:
    return Path(os.environ.get("RAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _images(name: str, positive: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.load(shared_data() / name, allow_pickle=False)
    flat = lambda a: a.reshape(len(a), -1).astype(np.float64) / 255.0  # noqa: E731
    return (
        flat(data["X_train"]),
        (data["y_train"] == positive).astype(np.int64),
        flat(data["X_test"]),
    )


def _spambase() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raw = np.loadtxt(shared_data() / "spambase.data", delimiter=",")
    raw = raw[np.random.default_rng(0).permutation(len(raw))]  # the file is sorted by class
    cut = int(0.8 * len(raw))
    return raw[:cut, :-1], raw[:cut, -1].astype(np.int64), raw[cut:, :-1]


DATASETS: dict[
    str, tuple[Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]], float, float]
] = {
    "mnist01": (lambda: _images("mnist_01.npz", 1), 1.0, 1.0),
    "cifar_airplane_bird": (lambda: _images("cifar10_airplane_bird.npz", 2), 0.5, 1.0),
    "spambase": (_spambase, 1.0, 0.1),
}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _cpu_timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and CPU seconds (this process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def load_benchmark_set(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training features, labels and the test points in the benchmarks' seeded order (the
    CIFAR file is sorted by class: the first points must not all be of one class)."""
    X_train, y_train, X_test = DATASETS[name][0]()
    return X_train, y_train, X_test[np.random.default_rng(1).permutation(len(X_test))]


def bench_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    _, sigma, spread = DATASETS[name]
    X_train, y_train, X_test = load_benchmark_set(name)
    edges = default_edges(X_train.shape[1], sigma, NUM_LEVELS, spread)
    common = dict(sigma=sigma, k=K, edges=edges, num_classes=2)
    warmup, _ = _timed(lambda: exact_knn(X_train, y_train, X_test[:1], backend="numpy", **common))
    per_point, cpu_per_point, results = [], [], []
    for s in range(0, args.points, args.group):
        part = X_test[s : min(args.points, s + args.group)]
        seconds, cpu, res = _cpu_timed(
            lambda p=part: exact_knn(X_train, y_train, p, backend="numpy", **common)
        )
        per_point.append(seconds / len(part))
        cpu_per_point.append(cpu / len(part))
        results.append(res)
        print(
            f"  {name}: {s + len(part)}/{args.points} points, {per_point[-1]:.4f} s/point",
            flush=True,
        )
    proba = np.vstack([r.proba for r in results])
    slack = np.concatenate([r.slack for r in results])
    levels = np.vstack([r.levels for r in results])
    kept = np.concatenate([r.kept for r in results])
    median = statistics.median(per_point)
    base_pts = X_test[: max(1, args.baseline_points)]
    base_s, base_q = _timed(lambda: reference_knn_proba(X_train, y_train, base_pts, **common))
    mc_pts = X_test[: max(1, args.mc_points)]
    mc_s, _ = _timed(
        lambda: monte_carlo_knn_proba(X_train, y_train, mc_pts, draws=1000, seed=0, **common)
    )
    base_per_point = base_s / len(base_pts)
    mc_per_point = mc_s / len(mc_pts)
    return {
        "n_train": int(X_train.shape[0]),
        "dim": int(X_train.shape[1]),
        "sigma": sigma,
        "spread": spread,
        "k": K,
        "num_levels": NUM_LEVELS,
        "test_points": int(proba.shape[0]),
        "group_size": args.group,
        "exact_median_s_per_point": median,
        "exact_mean_s_per_point": float(np.mean(per_point)),
        "exact_median_cpu_s_per_point": statistics.median(cpu_per_point),
        "exact_warmup_s": warmup,
        "target_s_per_point": TARGETS[name],
        "meets_target": bool(median <= TARGETS[name]),
        "meets_target_in_cpu_time": bool(statistics.median(cpu_per_point) <= TARGETS[name]),
        "straightforward_points": len(base_pts),
        "straightforward_s_per_point": base_per_point,
        "straightforward_over_exact": base_per_point / median,
        "straightforward_max_abs_diff": float(np.abs(base_q - proba[: len(base_pts)]).max()),
        "monte_carlo_points": len(mc_pts),
        "monte_carlo_draws": 1000,
        "monte_carlo_s_per_point": mc_per_point,
        "monte_carlo_over_exact": mc_per_point / median,
        "max_abs_row_sum_minus_1": float(np.abs(proba.sum(1) - 1.0).max()),
        "max_slack": float(slack.max()),
        "mean_boundary_levels": float(np.mean(levels[:, 1] - levels[:, 0] + 1)),
        "mean_points_kept": float(kept.mean()),
        "predicted_class_1_fraction": float(np.mean(proba[:, 1] > proba[:, 0])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 points, 1 baseline point")
    parser.add_argument("--points", type=int, default=200, help="test points per dataset")
    parser.add_argument("--group", type=int, default=25, help="test points per exact_knn call")
    parser.add_argument("--baseline-points", type=int, default=2)
    parser.add_argument("--mc-points", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--out", type=Path, default=RESULT)
    args, _ = parser.parse_known_args(argv)  # tolerate options meant for other bench scripts
    if args.quick:
        args.points, args.baseline_points, args.mc_points = 20, 1, 1
    if not shared_data().is_dir():
        print(f"shared data not found at {shared_data()} (set RAB_SHARED_DATA)", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "benchmark": "exact smoothed K-NN (rab.knn), K = 5, L = 200",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "blas_threads": args.threads,
        },
        "quick": args.quick,
        "datasets": {},
    }
    with threadpool_limits(args.threads):
        for name in args.datasets:
            print(f"== {name}", flush=True)
            report["datasets"][name] = bench_dataset(name, args)
            print(json.dumps(report["datasets"][name], indent=2), flush=True)
    cifar = report["datasets"].get("cifar_airplane_bird")
    if cifar:
        report["cifar_speedup_over_paper_60s"] = (
            PAPER_SECONDS_CIFAR / cifar["exact_median_s_per_point"]
        )
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    report["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
