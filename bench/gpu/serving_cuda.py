"""Ensemble serving on CUDA: the stacked vote function for N = 100 / 1000 MNIST CNNs.

For a session lent a GPU machine (exits with a clear message without CUDA). Builds N MNIST
CNNs at their seeded initial weights (serving cost does not depend on the weights), stacks
them on the GPU (``rab.ensemble.stacked``, the function a CUDA worker runs) and times
``stacked_votes`` on one input and on a batch of ``--batch`` inputs (median of ``--repeats``
after a warm-up; each call ends with the votes on the CPU, so it is synchronised). Also
checks that the hard votes on CUDA equal those on the CPU for the same members and inputs,
and reports the stacked members' bytes and the peak GPU memory.

Writes JSON to ``--out`` (default ``$OUT/serving_cuda.json`` when ``$OUT`` is set, else
``bench/results/serving_cuda.json``). About a minute on one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rab.ensemble.artifacts import MemberArtifact
from rab.ensemble.config import preset
from rab.ensemble.noise import member_seeds
from rab.ensemble.predict import load_member
from rab.ensemble.stacked import StackedMembers, stack_members, stacked_votes
from rab.ensemble.train import initial_model, serialize_state_dict

ROOT = Path(__file__).resolve().parents[2]


def _stacks(num_models: int, device: str) -> tuple[Any, tuple[StackedMembers, ...]]:
    config = preset("mnist", input_shape=(1, 28, 28), num_classes=2, sigma=1.0,
                    num_models=num_models, seed=0)
    members = (
        load_member(MemberArtifact.from_bytes(k, serialize_state_dict(
            initial_model(config, member_seeds(0, k))), {}), config, device=device)
        for k in range(num_models)
    )
    return config, tuple(stack_members(members))


def _median_s(stacks: tuple[StackedMembers, ...], X: np.ndarray, config: Any,
              repeats: int) -> float:
    """Median seconds of ``stacked_votes(stacks, X, config)`` after one warm-up call."""
    stacked_votes(stacks, X, config)  # kernel selection, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        stacked_votes(stacks, X, config)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--batch", type=int, default=64, help="inputs of the batched call")
    parser.add_argument("--repeats", type=int, default=20)
    default_out = (Path(os.environ["OUT"]) if "OUT" in os.environ
                   else ROOT / "bench" / "results") / "serving_cuda.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("serving_cuda.py needs a CUDA device (torch.cuda.is_available() is False); "
                 "run it on a GPU machine")
    rng = np.random.default_rng(0)
    X = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    results = {}
    for n in args.sizes:
        torch.cuda.reset_peak_memory_stats()
        config, stacks = _stacks(n, "cuda")
        one = _median_s(stacks, X[:1], config, args.repeats)
        batch = _median_s(stacks, X, config, args.repeats)
        _, cpu_stacks = _stacks(min(n, 100), "cpu")
        gpu_hard = stacked_votes(stacks[:1], X, config).hard
        cpu_hard = stacked_votes(cpu_stacks[:1], X, config).hard
        results[str(n)] = {
            "one_input_p50_s": one, f"batch_{args.batch}_p50_s": batch,
            "stacked_bytes": sum(s.nbytes for s in stacks),
            "peak_gpu_bytes": torch.cuda.max_memory_allocated(),
            "hard_votes_equal_cpu_first_chunk": bool(np.array_equal(gpu_hard, cpu_hard)),
        }
        print(f"N={n}: one input {one * 1e3:.1f} ms, {args.batch} inputs {batch * 1e3:.1f} ms",
              flush=True)
    out = {"benchmark": "stacked ensemble votes on CUDA (MNIST CNN)",
           "device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "sizes": results, "command": " ".join(["python", *sys.argv])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
