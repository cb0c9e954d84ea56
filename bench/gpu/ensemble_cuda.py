"""DNN-RAB on CUDA: models per minute for N MNIST CNNs, batched (torch.func + vmap) vs sequential.

For a session lent a GPU machine. Trains ``--models`` (default 64) MNIST CNNs for ``--epochs`` on
MNIST 0/1 (sigma = 1, the authors' Adam / batch 128 / lr 1e-3) in one ``train_members_batched``
call, and the first ``--sequential`` of them one by one with ``train_member``; both after an
untimed warm-up. Also checks, on this GPU:

- reproducibility: model 0 trained twice alone gives the same bytes (same SHA-256), and the batched
  chunk trained twice gives the same bytes;
- agreement: the batched and the sequential models differ only by float rounding (largest
  parameter difference). Their bytes, hence their hashes and test-time noise u_k, differ, so their
  votes are compared only through the mean single-model test accuracy.

MNIST comes from ``$RAB_SHARED_DATA`` or ``../shared/data`` (which does not travel to a device
machine: copy ``mnist_01.npz`` into an ignored folder of the repo and pass ``--data``); without it
the script times seeded synthetic data of the same shape and says so.

Writes JSON to ``--out`` (default ``$OUT/ensemble_cuda.json`` when ``$OUT`` is set, else
``bench/results/ensemble_cuda.json``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rab.ensemble.config import EnsembleConfig, preset
from rab.ensemble.predict import load_member, predict_votes
from rab.ensemble.train import train_member, train_members_batched

ROOT = Path(__file__).resolve().parents[2]


def _data(path: Path | None, subset: int | None) -> tuple[dict[str, np.ndarray], str]:
    candidates = [path] if path else [
        Path(os.environ.get("RAB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "mnist_01.npz"]
    for file in candidates:
        if file is not None and file.is_file():
            with np.load(file, allow_pickle=False) as d:
                arrays = {"X": (d["X_train"].astype(np.float32) / 255)[:, None],
                          "y": d["y_train"].astype(np.int64),
                          "X_test": (d["X_test"].astype(np.float32) / 255)[:, None],
                          "y_test": d["y_test"].astype(np.int64)}
            source = str(file)
            break
    else:
        rng = np.random.default_rng(0)
        arrays = {"X": rng.random((12665, 1, 28, 28), dtype=np.float32),
                  "y": rng.integers(0, 2, 12665).astype(np.int64),
                  "X_test": rng.random((2115, 1, 28, 28), dtype=np.float32),
                  "y_test": rng.integers(0, 2, 2115).astype(np.int64)}
        source = "synthetic (MNIST 0/1 not found): timings only, accuracies meaningless"
    if subset is not None:
        arrays["X"], arrays["y"] = arrays["X"][:subset], arrays["y"][:subset]
    return arrays, source


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _max_param_diff(a: bytes, b: bytes) -> float:
    sa = torch.load(io.BytesIO(a), weights_only=True)
    sb = torch.load(io.BytesIO(b), weights_only=True)
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    data, source = _data(args.data, args.subset)
    X, y = data["X"], data["y"]
    config: EnsembleConfig = preset("mnist", input_shape=(1, 28, 28), num_classes=2, sigma=1.0,
                                    num_models=args.models, epochs=args.epochs)
    ks = list(range(args.models))
    train_members_batched(config, X, y, ks[:2], device=device)  # warm-up: CUDA context, kernels
    train_member(config, X, y, 0, device=device)

    _sync(device)
    start = time.perf_counter()
    batched = train_members_batched(config, X, y, ks, device=device)
    _sync(device)
    batched_s = time.perf_counter() - start

    sequential = []
    _sync(device)
    start = time.perf_counter()
    for k in ks[: args.sequential]:
        sequential.append(train_member(config, X, y, k, device=device))
    _sync(device)
    sequential_s = time.perf_counter() - start

    again_single = train_member(config, X, y, 0, device=device)
    again_batched = train_members_batched(config, X, y, ks, device=device)
    test = data["X_test"]
    votes_b = predict_votes((load_member(a, config, device=device) for a in batched[: len(
        sequential)]), test, config)
    votes_s = predict_votes((load_member(a, config, device=device) for a in sequential), test,
                            config)
    per_model_b = float(batched_s / len(ks))
    per_model_s = float(sequential_s / len(sequential))
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "data": source,
        "training_points": len(y),
        "epochs": args.epochs,
        "models_batched": len(ks),
        "models_sequential": len(sequential),
        "seconds_batched": batched_s,
        "seconds_sequential": sequential_s,
        "models_per_minute_batched": 60.0 / per_model_b,
        "models_per_minute_sequential": 60.0 / per_model_s,
        "speedup_batched_over_sequential": per_model_s / per_model_b,
        "reproducible_single": again_single.sha256 == sequential[0].sha256,
        "reproducible_batched": [a.sha256 for a in again_batched] == [a.sha256 for a in batched],
        "max_param_diff_batched_vs_sequential": max(
            _max_param_diff(b.state_dict_bytes, s.state_dict_bytes)
            for b, s in zip(batched, sequential, strict=False)),
        "test_accuracy_mean_batched": float(np.mean(votes_b.hard == data["y_test"])),
        "test_accuracy_mean_sequential": float(np.mean(votes_s.hard == data["y_test"])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--sequential", type=int, default=16,
                        help="how many of the models to also train one by one")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--data", type=Path, default=None, help="path of mnist_01.npz")
    parser.add_argument("--device", default="cuda")
    default_out = (Path(os.environ["OUT"]) if "OUT" in os.environ else
                   ROOT / "bench" / "results") / "ensemble_cuda.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available: nothing to measure (use --device cpu for a dry run)")
        return 2
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
