"""Run every benchmark script (``bench/bench_*.py``) in turn; each writes ``bench/results/*.json``.

Usage: ``python bench/run_all.py [--only NAME ...] [-- ARGS passed to every script]``.
Scripts run one after another (never in parallel) so their timings do not disturb each other.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="script names, e.g. knn ensemble")
    parser.add_argument("script_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    extra = [a for a in args.script_args if a != "--"]
    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    if not scripts:
        print("no benchmark scripts selected", file=sys.stderr)
        return 2
    RESULTS_DIR.mkdir(exist_ok=True)
    runs = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *extra], cwd=BENCH_DIR.parent)
        runs.append(
            {"script": script.name, "exit_code": code, "seconds": time.perf_counter() - start}
        )
    (RESULTS_DIR / "run_all.json").write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    failed = [r["script"] for r in runs if r["exit_code"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
