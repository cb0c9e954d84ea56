"""Experiment grids (data sets x attacks x settings x sigmas), resumable, with reports.

- ``config``: TOML configurations and their expansion into cells;
- ``runner``: resumable execution, one atomically written JSON per cell;
- ``report``: Markdown tables beside the published figures, certified-accuracy plots;
- ``named``: the reproductions shipped in ``rab/experiments/grids/`` (package data).
"""

from rab.experiments.config import Cell, ExperimentConfig, Reference, load_config, parse_config
from rab.experiments.named import experiments_dir, named_config, named_configs
from rab.experiments.report import (
    empirical_bars,
    markdown_table,
    plot_curves,
    plot_empirical,
    plot_grid,
    summary_record,
)
from rab.experiments.runner import (
    RunRecord,
    finished_cells,
    load_cell,
    run_experiment,
    write_json,
)

__all__ = [
    "Cell",
    "ExperimentConfig",
    "Reference",
    "RunRecord",
    "empirical_bars",
    "experiments_dir",
    "finished_cells",
    "load_cell",
    "load_config",
    "markdown_table",
    "named_config",
    "named_configs",
    "parse_config",
    "plot_curves",
    "plot_empirical",
    "plot_grid",
    "run_experiment",
    "summary_record",
    "write_json",
]
