"""Artefact store benchmark: the S3 backend (a moto server process on loopback) against the
local store, in the same run.

Rows: put / get of one 100 MB object (a multipart upload on S3), and of 1,000 small objects
of ~50 KB (the size of a small ensemble member's state_dict), one after another as a worker
stores and loads members. S3 gets are measured cold (a fresh cache: every byte crosses the
network, then is verified) and warm (served by the machine's verified cache); local gets
read (and verify) the files. Every put writes new bytes (the store never rewrites an object).
Medians of ``--repeats`` rounds. Writes ``bench/results/store.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's packages and the tests' moto launcher

from models_store import LocalStore, ObjectStore  # noqa: E402
from tests.service.s3server import S3Server, moto_server  # noqa: E402

RESULT = ROOT / "bench" / "results" / "store.json"
LARGE = 100 * 1024 * 1024
SMALL = 50 * 1024
COUNT = 1000


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _round(store: ObjectStore, reader: Callable[[], ObjectStore], rng: np.random.Generator,
           warm: bool) -> dict[str, float]:
    """One round of every row on ``store``; ``reader()`` opens it as a machine that has read
    nothing yet."""
    big = rng.bytes(LARGE)
    small = [rng.bytes(SMALL) for _ in range(COUNT)]
    out: dict[str, float] = {}
    out["put_100MB_s"] = _timed(lambda: store.put_bytes(big))
    digest = hashlib.sha256(big).hexdigest()
    big_reader = reader()
    out["get_100MB_s"] = _timed(lambda: big_reader.get_bytes(digest))
    out["put_1000x50KB_s"] = _timed(lambda: [store.put_bytes(b) for b in small])
    names = [hashlib.sha256(b).hexdigest() for b in small]
    small_reader = reader()
    out["get_1000x50KB_s"] = _timed(lambda: [small_reader.get_bytes(n) for n in names])
    if warm:  # the same readers again: every object is in their caches now
        out["get_100MB_warm_s"] = _timed(lambda: big_reader.get_bytes(digest))
        out["get_1000x50KB_warm_s"] = _timed(
            lambda: [small_reader.get_bytes(n) for n in names]
        )
    for name in [digest, *names]:
        store.delete(name)
    return out


def _medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def run(repeats: int, work: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    local_root = work / "local"
    local = LocalStore(local_root)
    with moto_server(work / "moto.log") as server:
        s3: S3Server = server
        bucket = s3.new_bucket()
        caches = iter(range(10**6))
        remote = s3.store(work / "writer-cache", bucket)

        def fresh_reader() -> ObjectStore:
            return s3.store(work / f"reader-cache-{next(caches)}", bucket)

        rounds: dict[str, list[dict[str, float]]] = {"local": [], "s3": []}
        for _ in range(repeats):  # interleaved, so both see the same machine load
            rounds["local"].append(_round(local, lambda: LocalStore(local_root), rng, False))
            rounds["s3"].append(_round(remote, fresh_reader, rng, True))
    results = {name: _medians(r) for name, r in rounds.items()}
    for name, row in results.items():
        row["put_ms_per_small_object"] = 1000 * row["put_1000x50KB_s"] / COUNT
        row["get_ms_per_small_object"] = 1000 * row["get_1000x50KB_s"] / COUNT
        row["put_100MB_MB_per_s"] = LARGE / 2**20 / row["put_100MB_s"]
        row["get_100MB_MB_per_s"] = LARGE / 2**20 / row["get_100MB_s"]
        print(name, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    return {
        "benchmark": "models_store put/get: S3 backend (moto server on loopback) vs local",
        "large_bytes": LARGE, "small_bytes": SMALL, "small_count": COUNT, "repeats": repeats,
        "statistic": "median of rounds; S3 gets cold (fresh cache) unless *_warm",
        "server": "moto[server] standalone process (Python, in-memory), 127.0.0.1",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "results": results,
        "s3_over_local": {
            key: results["s3"][key] / results["local"][key]
            for key in ("put_100MB_s", "get_100MB_s", "put_1000x50KB_s", "get_1000x50KB_s")
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds (medians reported)")
    parser.add_argument("--quick", action="store_true", help="one round")
    args, _ = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        report = run(1 if args.quick else args.repeats, Path(tmp))
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
