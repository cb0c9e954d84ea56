"""``rab experiment run CONFIG`` and ``rab experiment reproduce NAME``: resumable grids.

``run`` evaluates every cell of a TOML configuration (``rab.experiments.config``), writing one
JSON per cell under ``--out/cells`` (a rerun skips finished cells), then ``results.json`` (our
figures beside the published ones), ``report.md`` and certified-accuracy plots under
``--out/plots``.  ``reproduce`` does the same for a configuration shipped in
``rab/experiments/grids/``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rab.cli._common import console, fail, progress_bar
from rab.experiments import (
    Cell,
    ExperimentConfig,
    load_config,
    markdown_table,
    named_config,
    named_configs,
    plot_grid,
    run_experiment,
    summary_record,
    write_json,
)

__all__ = ["register", "reproduce", "run"]

experiment_app = typer.Typer(help="Run experiment grids and the paper's reproductions.",
                             no_args_is_help=True)


NumTest = Annotated[int | None, typer.Option(
    help="A smoke run: certify only the first N points of each test set (not the grid's "
         "setup; its cells are stored under other keys).", show_default=False)]


def _limited(config: ExperimentConfig, num_test: int | None) -> ExperimentConfig:
    """``config`` with every cell certifying at most ``num_test`` points of each test set."""
    if num_test is None:
        return config
    if num_test < 1:
        fail(f"--num-test must be at least 1, got {num_test}")
    return replace(config, cells=tuple(replace(c, num_test=num_test) for c in config.cells))


def _execute(config: ExperimentConfig, out: Path, force: bool) -> None:
    def on_cell(index: int, total: int, cell: Cell, skipped: bool) -> None:
        state = "[dim]finished earlier, skipped[/]" if skipped else "running"
        console.print(f"cell {index + 1}/{total} ({cell.key}) {state}: {cell.label}",
                      highlight=False)

    try:
        with progress_bar() as report:
            record = run_experiment(config, out, force=force, on_cell=on_cell, progress=report)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    write_json(out / "results.json", summary_record(config, record.results))
    table = markdown_table(config, record.results)
    (out / "report.md").write_text(table)
    plots = plot_grid(config, record.results, out / "plots")
    stdout = Console()
    stdout.print(table, markup=False, highlight=False)
    stdout.print(f"{len(record.computed)} cells computed, {len(record.skipped)} skipped; wrote "
                 f"{out / 'results.json'}, {out / 'report.md'} and {len(plots)} plots",
                 highlight=False)


@experiment_app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="TOML experiment configuration.")],
    out: Annotated[Path | None, typer.Option(help="Output directory (default: "
                                                  "experiment-results/<name>).")] = None,
    force: Annotated[bool, typer.Option(help="Recompute finished cells.")] = False,
    num_test: NumTest = None,
) -> None:
    """Run (or resume) the grid of a configuration file."""
    try:
        parsed = load_config(config)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    _execute(_limited(parsed, num_test), out or Path("experiment-results") / parsed.name, force)


@experiment_app.command("reproduce")
def reproduce(
    name: Annotated[str, typer.Argument(help="A shipped grid (rab experiment list), e.g. "
                                             "table5-spambase.")],
    out: Annotated[Path | None, typer.Option(help="Output directory (default: "
                                                  "experiment-results/<name>).")] = None,
    force: Annotated[bool, typer.Option(help="Recompute finished cells.")] = False,
    num_test: NumTest = None,
) -> None:
    """Reproduce one of the paper's tables or figures (see ``rab experiment list``)."""
    try:
        parsed = named_config(name)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    _execute(_limited(parsed, num_test), out or Path("experiment-results") / name, force)


@experiment_app.command("triggers")
def triggers(
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("triggers.png"),
    dataset: Annotated[str, typer.Option(help="Built-in data set whose first test image "
                                              "carries the patterns (mnist01, cifar10, ...).")]
    = "mnist01",
    norm: Annotated[float, typer.Option(help="L2 norm of each pattern.")] = 1.0,
    index: Annotated[int, typer.Option(help="Which test image to draw.")] = 0,
) -> None:
    """Draw the authors' one-pixel, four-pixel and blending patterns (the paper's Figure 5)."""
    from rab.attacks import make_trigger
    from rab.evaluation import DatasetSpec, load_dataset
    from rab.plots import trigger_pictures

    try:
        data = load_dataset(DatasetSpec(dataset))
        if not 0 <= index < len(data.X_test):
            raise ValueError(f"--index must lie in [0, {len(data.X_test)}), got {index}")
        shape = data.X_test.shape[1:]
        patterns = [make_trigger(kind, shape, norm=norm)
                    for kind in ("one_pixel", "four_pixel", "blending")]
        written = trigger_pictures(patterns, data.X_test[index], out,
                                   feature_range=data.feature_range,
                                   title=f"{dataset}: backdoor patterns, ||delta|| = {norm:g}")
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"wrote {written}")


@experiment_app.command("list")
def list_named() -> None:
    """List the shipped reproductions."""
    for name in named_configs():
        typer.echo(name)


def register(app: typer.Typer) -> None:
    """Add the ``experiment`` command group to the ``rab`` application."""
    app.add_typer(experiment_app, name="experiment")
