"""Shared pieces of the local, remote and service commands: rich progress, error exits, the
class parser, the results table and plain record tables (jobs, keys)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from contract.api import Summary

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


def parse_classes(text: str | None) -> tuple[int | str, ...] | None:
    """``--classes``: comma-separated labels or names (at least two); labels become ints."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if len(items) < 2:
        fail(f"--classes needs at least two comma-separated classes, got {text!r}")
    return tuple(int(c) if c.lstrip("-").isdigit() else c for c in items)


def attack_label(attack: Mapping[str, Any] | None) -> str:
    """One line describing an attack record (``rab.evaluation.AttackSpec.to_dict``)."""
    if attack is None:
        return "no attack"
    size = "" if attack.get("norm") is None else f" ||delta||={attack['norm']:g}"
    return f"{attack['kind']} backdoor{size}, r_p={attack['rate']:g}"


def results_table(
    summary: Summary, title: str, vanilla: Mapping[str, Mapping[str, float]] | None = None
) -> Table:
    """Accuracy, attack success rate, and certified accuracy over certified rate at each
    radius R (eq. 14), one row per test set (with its number of points); with ``vanilla``, a
    model column and the undefended model's accuracy and success rate beneath. The one table
    of the local and the remote commands."""
    sets = summary.sets
    radii = list(next(iter(sets.values())).certified_accuracy) if sets else []
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=0,
                  caption="radius columns: certified accuracy (upper) and certified rate (lower) "
                  "at that radius R (eq. 14); ASR: attack success rate")
    table.add_column("test set", no_wrap=True)
    if vanilla is not None:
        table.add_column("model", no_wrap=True)
    headers = [f"R={r}" if i == 0 else r for i, r in enumerate(radii)]
    for name in ("acc", "ASR", *headers):
        table.add_column(name, justify="right", no_wrap=True)
    for name, m in sets.items():
        asr = "-" if m.attack_success_rate is None else f"{m.attack_success_rate:.3f}"
        cells = [f"{m.certified_accuracy[r]:.3f}\n{m.certified_rate[r]:.3f}" for r in radii]
        model = [] if vanilla is None else ["RAB"]
        table.add_row(f"{name} ({m.num_points})", *model, f"{m.accuracy:.3f}", asr, *cells)
        if vanilla is not None and name in vanilla:
            v = vanilla[name]
            vs = v.get("attack_success_rate")
            table.add_row("", "vanilla", f"{v['accuracy']:.3f}",
                          "-" if vs is None else f"{vs:.3f}", *["-"] * len(radii))
    return table


def count_table(summary: Summary, title: str) -> Table | None:
    """Certified accuracy over certified rate against the poison count r, one row per test
    set with a count certificate (partition jobs; the K-NN's plain-K-NN count, with the
    accuracy of ITS prediction), None where there is none."""
    counted = {name: m.poison_count for name, m in summary.sets.items()
               if m.poison_count is not None}
    if not counted:
        return None
    counts = list(next(iter(counted.values())).certified_accuracy)
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=0,
                  caption="r columns: certified accuracy (upper) and certified rate (lower) "
                  "against r poisoned training points (inserted or deleted; a changed point "
                  "counts 2)")
    for name in ("test set", "classifier", "acc", "median r",
                 *[f"r={r}" if i == 0 else r for i, r in enumerate(counts)]):
        table.add_column(name, justify="left" if name in ("test set", "classifier") else "right",
                         no_wrap=True)
    for name, c in counted.items():
        table.add_row(name, c.classifier, f"{c.accuracy:.3f}", f"{c.median_count:g}",
                      *[f"{c.certified_accuracy[r]:.3f}\n{c.certified_rate[r]:.3f}"
                        for r in counts])
    return table


def timestamp(moment: datetime | None) -> str:
    """A time as the commands print it (``-`` for none)."""
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def print_records(
    out: Console, title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]
) -> None:
    """Print a table of one row per record (a job, a key) on ``out``, cells as given and never
    shortened, however narrow the terminal (ids must be copied whole into the next command)."""
    rows = list(rows)
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for i, column in enumerate(columns):
        widest = max((len(row[i]) for row in rows), default=0)
        table.add_column(column, no_wrap=True, min_width=max(widest, len(column)))
    for row in rows:
        table.add_row(*row)
    out.print(table, crop=False, markup=False, highlight=False)
