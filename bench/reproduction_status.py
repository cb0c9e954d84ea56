"""Write the reproduction status table of ``docs/experiments.md`` from the grids and results.

Every ``[[reference]]`` row of the shipped grids (``rab/experiments/grids``) beside our figure
from ``bench/results/reproduce_<name>.json`` (``rab.experiments.status``), plus the published
rows no grid holds. Rewrites the block between the status markers of ``docs/experiments.md``
(``--print`` only prints it). Run after ``bench/bench_reproduce.py``.

Usage: ``python bench/reproduction_status.py [--print]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rab.experiments import named_config, named_configs
from rab.experiments.status import Ungridded, render_status, status_rows, write_between_markers

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "experiments.md"
#: Published rows of Tables 2-6 and C.7 without a grid, counted from the paper's tables.
UNGRIDDED = (
    Ungridded("Table 2", "ImageNet", 12, "no ImageNet data here"),
    Ungridded("Table 3", "CIFAR", 6, "not run: a CIFAR ResNet ensemble is GPU work"),
    Ungridded("Table 3", "ImageNet", 6, "no ImageNet data here"),
    Ungridded("Table 4", "CIFAR", 12, "not run: DP-SGD ResNet ensembles are GPU work"),
    Ungridded("Table 4", "ImageNet", 12, "no ImageNet data here"),
    Ungridded("Table 6", "CIFAR (10-way)", 3, "the shared CIFAR file holds two classes only"),
    Ungridded("Table C.7", "CIFAR (automobile, dog)", 12,
              "the shared CIFAR file holds airplane and bird only"),
    Ungridded("Table C.7", "ImageNet (dog, fish)", 12, "no ImageNet data here"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print", action="store_true", help="print, do not rewrite the doc")
    args = parser.parse_args(argv)
    configs = [named_config(n) for n in named_configs()]
    rows = status_rows([c for c in configs if c.references], ROOT / "bench" / "results")
    text = render_status(rows, UNGRIDDED)
    if args.print:
        print(text)
    else:
        write_between_markers(DOC, text)
        print(f"wrote {len(rows)} rows to {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
