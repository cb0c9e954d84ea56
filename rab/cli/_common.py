"""Shared pieces of the local commands: rich progress, error exits, the results table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rab.evaluation import EvaluationResult

console = Console(stderr=True)
#: Exit status for invalid input (the same as typer's usage errors).
BAD_INPUT = 2


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    """Print ``message`` in red on stderr and exit with ``code``."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar driven by ``report(stage, done, total)`` callbacks."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        yield report


def results_table(result: EvaluationResult, title: str) -> Table:
    """Accuracy, certified accuracy and certified rate per test set at every radius."""
    table = Table(title=title, caption="R=r: certified accuracy (upper) and certified rate "
                  "(lower) at radius r (eq. 14); ASR: attack success rate")
    table.add_column("test set")
    table.add_column("model")
    table.add_column("acc", justify="right")
    table.add_column("ASR", justify="right")
    for r in result.radii:
        table.add_column(f"R={r:g}", justify="right")
    for test in result.evaluation.tests:
        m = result.metrics.get(test.subset)
        if m is None:
            continue
        success = m.get("attack_success_rate")
        cells = [
            f"{m['certified_accuracy'][f'{r:g}']:.3f}\n{m['certified_rate'][f'{r:g}']:.3f}"
            for r in result.radii
        ]
        table.add_row(test.subset, "RAB", f"{m['accuracy']:.3f}",
                      "-" if success is None else f"{success:.3f}", *cells)
        if result.vanilla is not None and test.subset in result.vanilla:
            v = result.vanilla[test.subset]
            vs = v.get("attack_success_rate")
            table.add_row(test.subset, "vanilla", f"{v['accuracy']:.3f}",
                          "-" if vs is None else f"{vs:.3f}", *["-"] * len(result.radii))
    return table
