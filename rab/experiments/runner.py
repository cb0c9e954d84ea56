"""Running an experiment grid, resumably.

Each cell's result is written to ``<out>/cells/<cell.key>.json`` atomically (temporary file,
fsync, rename), so a crash leaves either the whole file or none.  A rerun loads the finished
cells (after checking that the stored settings are the cell's) and computes only the others.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rab.ensemble.artifacts import atomic_write
from rab.evaluation import Progress, evaluate, load_dataset
from rab.experiments.config import Cell, ExperimentConfig

__all__ = ["RunRecord", "cell_path", "finished_cells", "load_cell", "run_experiment", "write_json"]

#: ``on_cell(index, total, cell, skipped)``: called before each cell is run or skipped.
CellCallback = Callable[[int, int, Cell, bool], None]


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON atomically (NaN and infinity refused)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(record, indent=1, allow_nan=False) + "\n").encode())


def cell_path(out_dir: Path, cell: Cell) -> Path:
    return out_dir / "cells" / f"{cell.key}.json"


def load_cell(out_dir: Path, cell: Cell) -> dict[str, Any] | None:
    """The stored result of ``cell``, or None if it is missing or was made with other settings."""
    path = cell_path(out_dir, cell)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if record.get("settings") != json.loads(json.dumps(cell.settings())):
        return None
    return record


def finished_cells(config: ExperimentConfig, out_dir: Path) -> dict[str, dict[str, Any]]:
    """The stored results of the cells of ``config`` already finished in ``out_dir``."""
    return {c.key: r for c in config.cells if (r := load_cell(out_dir, c)) is not None}


@dataclass
class RunRecord:
    """What a run did: keys of the cells computed now and of those found finished."""

    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_experiment(
    config: ExperimentConfig,
    out_dir: Path,
    *,
    force: bool = False,
    data_dir: Path | None = None,
    on_cell: CellCallback | None = None,
    progress: Progress | None = None,
    keep_models: bool = False,
    max_cells: int | None = None,
) -> RunRecord:
    """Evaluate every cell of ``config`` not finished in ``out_dir`` (all with ``force``);
    ``max_cells``: compute at most that many (in grid order), leaving the rest for a later run.

    Data sets are loaded once per run.  An ensemble's models live in ``out_dir/models`` while
    its cell runs (an interrupted cell resumes training where it stopped) and are deleted once
    the cell's result is stored, unless ``keep_models``.  Returns the record of computed and
    skipped cells with every cell's stored result.
    """
    record = RunRecord()
    loaded: dict[str, Any] = {}
    total = len(config.cells)
    for index, cell in enumerate(config.cells):
        stored = None if force else load_cell(out_dir, cell)
        if on_cell is not None:
            on_cell(index, total, cell, stored is not None)
        if stored is not None:
            record.skipped.append(cell.key)
            record.results[cell.key] = stored
            continue
        if max_cells is not None and len(record.computed) >= max_cells:
            continue
        spec_key = json.dumps(cell.dataset.to_dict(), sort_keys=True)
        if spec_key not in loaded:
            loaded[spec_key] = load_dataset(cell.dataset, data_dir)
        result = evaluate(
            loaded[spec_key], cell.method, cell.attack, radii=cell.radii,
            num_test=cell.num_test, vanilla=cell.vanilla, progress=progress,
            workdir=out_dir / "models",
        )
        stored = json.loads(json.dumps({  # the JSON form, as a rerun will read it back
            "key": cell.key, "label": cell.label, "settings": cell.settings(),
            "result": result.to_dict(),
        }))
        write_json(cell_path(out_dir, cell), stored)
        if not keep_models:
            shutil.rmtree(out_dir / "models", ignore_errors=True)
        record.computed.append(cell.key)
        record.results[cell.key] = stored
    return record
