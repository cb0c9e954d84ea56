"""Reproductions of the paper's tables as benchmarks: our figures beside the published ones.

Runs the named experiment configurations of ``rab/experiments/grids/`` (``rab.experiments``)
and writes,
per configuration, ``bench/results/reproduce_<name>.json`` (our figures, the paper's, settings,
seconds) and ``bench/results/reproduce_<name>.md`` (the Markdown table), plus the per-cell results
and certified-accuracy plots under ``bench/results/reproduce/<name>/``. Finished cells are kept:
a rerun computes only the missing ones (``--force`` recomputes).

Usage: ``python bench/bench_reproduce.py [--only NAME ...] [--all] [--force] [--report-only]
[--max-cells K] [--redraw-empirical]`` (``--report-only``: write the table and plots of the cells
finished so far, computing nothing, and refuse if that would drop cells from the written summary,
since the cell files are not committed; ``--max-cells``: compute at most K more cells, a partial
run; ``--redraw-empirical``: only redraw the Figure 3 bars from the written summary JSON).
Default: ``table5-spambase`` only (about 10-30 CPU minutes); ``--all`` runs every configuration
(the MNIST / CIFAR K-NN rows take hours on 2 CPU cores, Table 2 trains ensembles).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from rab.experiments import (
    RunRecord,
    empirical_bars,
    finished_cells,
    markdown_table,
    named_config,
    named_configs,
    plot_grid,
    run_experiment,
    summary_record,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT = ("table5-spambase",)


def reproduce(name: str, *, force: bool, report_only: bool, max_cells: int | None = None) -> int:
    config = named_config(name)
    work = RESULTS / "reproduce" / name
    start = time.perf_counter()

    def on_cell(index: int, total: int, cell: object, skipped: bool) -> None:
        state = "done already" if skipped else "running"
        print(f"[{name}] cell {index + 1}/{total} {state}: {cell.label}", flush=True)  # type: ignore[attr-defined]

    if report_only:
        done = finished_cells(config, work)
        lost = sorted(set(_summary_rows(name)) - set(done))
        if lost:  # the cell files are not committed: do not overwrite the summary without them
            print(f"[{name}] --report-only: {len(lost)} cells of "
                  f"{RESULTS / f'reproduce_{name}.json'} have no cell file under {work}/cells; "
                  "nothing written (rerun them, or --redraw-empirical)", file=sys.stderr)
            return 1
        record = RunRecord(skipped=list(done), results=done)
    else:
        record = run_experiment(config, work, force=force, on_cell=on_cell, max_cells=max_cells)
    seconds = time.perf_counter() - start
    summary = summary_record(config, record.results)
    cell_seconds = sum(sum((c["seconds"] or {}).values()) for c in summary["cells"])
    summary.update(
        command=f"python bench/bench_reproduce.py --only {name}",
        cell_seconds_total=cell_seconds,
        computed_cells=len(record.computed), skipped_cells=len(record.skipped),
        seconds_this_run=seconds, python=platform.python_version(), machine=platform.machine(),
    )
    write_json(RESULTS / f"reproduce_{name}.json", summary)
    table = markdown_table(config, record.results)
    if len(record.results) < len(config.cells):
        table = (f"**Partial: {len(record.results)} of {len(config.cells)} cells finished.**\n\n"
                 + table)
    plots = plot_grid(config, record.results, work / "plots")
    text = table + "\nPlots: " + ", ".join(str(p.relative_to(ROOT)) for p in plots) + "\n"
    text += (f"\nProduced by `{summary['command']}`: {len(record.computed)} cells computed in "
             f"{seconds:.0f} s this run, {len(record.skipped)} kept from earlier runs; "
             f"{cell_seconds:.0f} s of computation in all cells.\n")
    (RESULTS / f"reproduce_{name}.md").write_text(text)
    print(text)
    return 0


def _summary_rows(name: str) -> dict[str, dict[str, object]]:
    """Our figures (by cell key) in the written summary of ``name``, if any."""
    path = RESULTS / f"reproduce_{name}.json"
    if not path.is_file():
        return {}
    return {c["key"]: c["ours"] for c in json.loads(path.read_text())["cells"]}


def redraw_empirical(name: str) -> int:
    """Redraw the Figure 3 bars of ``name`` from its written summary (no cell file needed)."""
    config = named_config(name)
    if "empirical" not in config.plots:
        print(f"[{name}] draws no empirical plot", file=sys.stderr)
        return 1
    paths = empirical_bars(config, _summary_rows(name), RESULTS / "reproduce" / name / "plots")
    print("\n".join(str(p.relative_to(ROOT)) for p in paths))
    return 0 if paths else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help=f"names: {named_configs()}")
    parser.add_argument("--all", action="store_true", help="run every configuration")
    parser.add_argument("--force", action="store_true", help="recompute finished cells")
    parser.add_argument("--report-only", action="store_true",
                        help="only write the report of the cells finished so far")
    parser.add_argument("--max-cells", type=int, default=None,
                        help="compute at most this many cells per configuration (a partial run)")
    parser.add_argument("--redraw-empirical", action="store_true",
                        help="only redraw the Figure 3 bars from the written summary JSON")
    args, _ = parser.parse_known_args(argv)
    names = named_configs() if args.all else (args.only or list(DEFAULT))
    unknown = sorted(set(names) - set(named_configs()))
    if unknown:
        print(f"unknown configurations {unknown}; known: {named_configs()}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.redraw_empirical:
        return max(redraw_empirical(name) for name in names)
    status = 0
    for name in names:
        status = max(status, reproduce(name, force=args.force, report_only=args.report_only,
                                       max_cells=args.max_cells))
    print(json.dumps({"reproduced": names}))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
