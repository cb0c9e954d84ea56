"""DNN-RAB benchmark: training overhead on CPU and a reduced reproduction of Table 2 (MNIST).

1. CPU seconds per model-epoch of the MNIST CNN on all of MNIST 0/1 (12,665 points, sigma = 1),
   through ``rab.ensemble.train_ensemble`` (seeding, noise, hashing, atomic files included) and
   through a plain PyTorch loop of the same model in the same process, interleaved; ratio of the
   medians. A DataLoader-based plain loop is reported too.
2. Table 2, MNIST 1 -> 0, four-pixel trigger, ||delta|| = 0.1, r_p = 0.02, sigma = 1.0: N models
   (default 100) trained on the poisoned set, hard votes with Clopper-Pearson at alpha = 0.001
   (soft votes with Hoeffding and the uncertified point-estimate radius beside them), clean and
   backdoored accuracy, certified accuracy at R = 0.2 / 0.5 / 1.0 / 2.0, the paper's figures
   (N = 1000, Hoeffding) and the largest radius N models can certify at all.

Writes ``bench/results/ensemble.json``. Options: ``--models``, ``--epochs``, ``--subset`` (training
points), ``--workdir`` (keep and resume the trained models), ``--skip-overhead``, ``--skip-table2``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rab.attacks import backdoor_test_set, four_pixel, poison_training_set
from rab.bounds import certify_hard_votes, certify_soft_votes
from rab.data import load_npz
from rab.ensemble.certify import certify_votes, expected_certificates
from rab.ensemble.config import EnsembleConfig, preset
from rab.ensemble.predict import iter_members, predict_votes
from rab.ensemble.train import configure_cpu_threads, train_ensemble
from rab.ensemble.vote import VoteMatrices
from rab.metrics import summarize
from rab.nets import build_model, classification_loss

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "ensemble.json"
RADII = (0.2, 0.5, 1.0, 2.0)
SIGMA = 1.0
#: Table 2, MNIST, four-pixel, ||delta|| = 0.1, r_p = 0.02, sigma = 1.0 (N = 1000, Hoeffding).
PAPER_ROW = {"clean_accuracy": 0.999, "backdoored_accuracy": 1.000,
             "certified_accuracy": {"0.2": 1.000, "0.5": 1.000, "1": 0.999, "2": 0.969},
             "num_models": 1000, "bound": "hoeffding (soft votes)", "alpha": 0.001}


def shared_data() -> Path:
    return Path(os.environ.get("RAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _mnist_config(num_models: int, epochs: int, seed: int = 0) -> EnsembleConfig:
    return preset("mnist", input_shape=(1, 28, 28), num_classes=2, sigma=SIGMA,
                  num_models=num_models, epochs=epochs, seed=seed)


# ------------------------------------------------------------------ 1. overhead


def _plain_loop(X: np.ndarray, y: np.ndarray, seed: int, dataloader: bool) -> None:
    """The textbook loop: same model, Adam, batch 128, one fixed noise draw, one epoch."""
    torch.manual_seed(seed)
    model = build_model("mnist_cnn", (1, 28, 28), 2)
    noisy = torch.from_numpy(X) + SIGMA * torch.randn(X.shape)
    labels = torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if dataloader:
        batches: Any = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(noisy, labels), batch_size=128, shuffle=True)
    else:
        order = torch.randperm(len(X))
        batches = ((noisy[i], labels[i]) for i in order.split(128))
    model.train()
    for xb, yb in batches:
        loss = classification_loss(model(xb), yb, 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _thread_seconds(fn: Callable[[], object]) -> float:
    """CPU seconds of the calling thread (all of torch's work when it runs single-threaded)."""
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def overhead(X: np.ndarray, y: np.ndarray, repeats: int, models: int) -> dict[str, Any]:
    """CPU seconds per model-epoch, ours vs plain loops, single-threaded, interleaved blocks.

    One thread, timed with ``time.thread_time``, because on a shared machine the process CPU time
    of a multi-threaded torch includes OpenMP spin-waiting and varies several-fold between runs.
    """
    previous = torch.get_num_threads()
    configure_cpu_threads(1)
    runs: dict[str, list[float]] = {"rab": [], "plain": [], "plain_dataloader": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(repeats):
                config = _mnist_config(models, 1, seed=rep)
                runs["rab"].append(_thread_seconds(lambda c=config, r=rep: train_ensemble(
                    c, X, y, Path(tmp) / str(r), cpu_threads=1)) / models)
                for name, dataloader in (("plain", False), ("plain_dataloader", True)):
                    runs[name].append(_thread_seconds(lambda r=rep, d=dataloader: [
                        _plain_loop(X, y, models * r + j, dataloader=d)
                        for j in range(models)]) / models)
    finally:
        configure_cpu_threads(previous)
    med = {k: statistics.median(v) for k, v in runs.items()}
    best = {k: min(v) for k, v in runs.items()}
    paired = [ours / plain for ours, plain in zip(runs["rab"], runs["plain"], strict=True)]
    return {
        "what": "CPU seconds (one thread) per MNIST-CNN model-epoch on MNIST 0/1 (all 12,665 "
                "training points), sigma = 1, Adam, batch 128. rab = train_ensemble of "
                f"{models} models (noise, seeding, training, hashing, atomic files); plain = the "
                "same model in a textbook loop (index slicing, or a DataLoader); interleaved",
        "repeats": repeats,
        "models_per_repeat": models,
        "cpu_seconds_per_model_epoch": runs,
        "median": med,
        "min": best,
        "ratio_rab_over_plain_median": med["rab"] / med["plain"],
        "ratio_rab_over_plain_paired": paired,
        "ratio_rab_over_plain_paired_median": statistics.median(paired),
        "ratio_rab_over_plain_min": best["rab"] / best["plain"],
        "ratio_rab_over_plain_dataloader_median": med["rab"] / med["plain_dataloader"],
    }


# ------------------------------------------------------------------ 2. Table 2


def _summary(cert: Any, labels: np.ndarray) -> dict[str, Any]:
    s = summarize(cert.prediction, labels, cert.radius, RADII)
    return s.as_dict()


def _radius_limits(num_models: int, alpha: float) -> dict[str, float]:
    """Largest radius N unanimous votes can certify, hard (CP) and soft (Hoeffding) votes."""
    hard = certify_hard_votes(np.array([[num_models, 0]]), sigma=SIGMA, alpha=alpha)
    soft = certify_soft_votes(np.array([[1.0, 0.0]]), num_models=num_models, sigma=SIGMA,
                              alpha=alpha)
    return {"hard_clopper_pearson": float(hard.radius[0]), "soft_hoeffding": float(soft.radius[0])}


def table2(num_models: int, epochs: int, subset: int | None, alpha: float,
           workdir: Path) -> dict[str, Any]:
    data = load_npz(shared_data() / "mnist_01.npz")
    trigger = four_pixel(data.input_shape, 0.1)
    poisoned = poison_training_set(data, trigger, rate=0.02, target=0, seed=0)
    backdoored = backdoor_test_set(data, trigger, target=0)
    X, y = poisoned.dataset.X_train, poisoned.dataset.y_train
    if subset is not None:
        pick = np.sort(np.random.default_rng(0).permutation(len(y))[:subset])
        X, y = X[pick], y[pick]
    config = _mnist_config(num_models, epochs)
    progress: list[int] = []

    def report(done: int, total: int) -> None:
        progress.append(done)
        print(f"  models {done}/{total}", flush=True)

    start = time.perf_counter()
    train_ensemble(config, X, y, workdir, progress=report)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    votes = {"clean": predict_votes(iter_members(workdir), data.X_test, config),
             "backdoored": predict_votes(iter_members(workdir), backdoored.X, config)}
    vote_seconds = time.perf_counter() - start
    labels = {"clean": data.y_test, "backdoored": backdoored.y_true}
    results: dict[str, Any] = {}
    for name, matrices in votes.items():
        matrices.save(workdir / f"votes_{name}")
        results[name] = _evaluate(matrices, labels[name], alpha)
    limits = _radius_limits(num_models, alpha)
    return {
        "setting": {"dataset": "MNIST 0/1 (1 -> 0)", "attack": "four-pixel", "delta_norm": 0.1,
                    "r_p": 0.02, "sigma": SIGMA, "num_models": num_models, "epochs": epochs,
                    "training_points": len(y), "alpha": alpha,
                    "optimizer": "adam lr 1e-3 batch 128"},
        "attack": {"num_poisoned": poisoned.num_poisoned,
                   "effective_norm_range": [float(poisoned.effective_norms.min()),
                                            float(poisoned.effective_norms.max())],
                   "total_norm_eq14": poisoned.total_norm},
        "results": results,
        "largest_certifiable_radius": limits,
        "limits_note": (
            f"with N = {num_models} models and alpha = {alpha} no radius above "
            f"{limits['hard_clopper_pearson']:.3f} (hard votes, Clopper-Pearson) or "
            f"{limits['soft_hoeffding']:.3f} (soft votes, Hoeffding) can be certified, so "
            "certified accuracy at larger R is 0 by construction; the 'expected' radius is a "
            "point estimate, NOT a certificate (infinite where all votes agree)"),
        "paper": PAPER_ROW,
        "seconds": {"train": train_seconds, "vote": vote_seconds},
        "models_found_trained": progress[0],
    }


def _evaluate(votes: VoteMatrices, labels: np.ndarray, alpha: float) -> dict[str, Any]:
    return {
        "hard_clopper_pearson": _summary(certify_votes(votes, alpha=alpha), labels),
        "soft_hoeffding": _summary(certify_votes(votes, alpha=alpha, votes="soft"), labels),
        "expected_not_certified": _summary(expected_certificates(votes), labels),
        "single_model_accuracy_mean": float(np.mean(votes.hard == labels)),
        "hard_clopper_pearson_first_n_models": {
            str(n): _summary(certify_votes(votes.first(n), alpha=alpha), labels)[
                "certified_accuracy"]
            for n in (10, 20, 50) if n < votes.num_models},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--subset", type=int, default=None, help="training points (default all)")
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--repeats", type=int, default=7, help="overhead repeats")
    parser.add_argument("--overhead-models", type=int, default=2,
                        help="models per overhead repeat")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="directory for the trained models (kept; reruns resume)")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-table2", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    if not (shared_data() / "mnist_01.npz").is_file():
        print(f"shared data not found in {shared_data()} (set RAB_SHARED_DATA)", file=sys.stderr)
        return 2
    threads = configure_cpu_threads()
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else
                                                      sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch_threads": threads, "torch": torch.__version__,
                    "cuda": torch.cuda.is_available()},
    }
    if not args.skip_overhead:
        with np.load(shared_data() / "mnist_01.npz", allow_pickle=False) as d:
            X = (d["X_train"].astype(np.float32) / 255)[:, None]
            y = d["y_train"].astype(np.int64)
        print("overhead ...", flush=True)
        report["overhead"] = overhead(X, y, args.repeats, args.overhead_models)
        print(json.dumps(report["overhead"], indent=1), flush=True)
    if not args.skip_table2:
        print(f"table 2: {args.models} models x {args.epochs} epochs ...", flush=True)
        if args.workdir is None:
            with tempfile.TemporaryDirectory() as tmp:
                report["table2"] = table2(args.models, args.epochs, args.subset, args.alpha,
                                          Path(tmp))
        else:
            report["table2"] = table2(args.models, args.epochs, args.subset, args.alpha,
                                      args.workdir)
        print(json.dumps(report["table2"]["results"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
