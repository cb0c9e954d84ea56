"""The reproduction status: every published row of the grids, ours beside the paper's.

One line per ``[[reference]]`` entry of every grid (a (table, data set, attack, setting, sigma)
row of the paper), read from the grid and from the summary its benchmark run wrote
(``bench/results/reproduce_<name>.json``, :func:`rab.experiments.summary_record`).  A row is
*reproduced* when every published figure it has lies within :data:`TOLERANCE` of ours,
*differs* otherwise, *not run* without a finished cell.  A stored cell is found by its key,
else by the reference's fields (data set, attack, setting, sigma) in its stored settings; such
a cell, stored under an earlier encoding of the settings, is marked "(earlier settings
encoding)".  Published rows no grid holds (no data set here, e.g. ImageNet) are listed as
:class:`Ungridded` groups.  :func:`write_between_markers` puts the table into a document
between ``<!-- reproduction-status:start -->`` and ``<!-- reproduction-status:end -->``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rab.experiments.config import ExperimentConfig, Reference

__all__ = [
    "MARKERS",
    "TOLERANCE",
    "StatusRow",
    "Ungridded",
    "render_status",
    "status_rows",
    "write_between_markers",
]

#: Largest |ours - paper| of a row called reproduced.
TOLERANCE = 0.05
MARKERS = ("<!-- reproduction-status:start -->", "<!-- reproduction-status:end -->")
#: reference figure -> (our summary field, short name in the table)
_FIGURES: dict[str, tuple[str, str]] = {
    "success_rate": ("vanilla_success_rate", "SR"),
    "vanilla_clean_accuracy": ("vanilla_clean_accuracy", "vanilla clean"),
    "clean_accuracy": ("clean_accuracy", "clean"),
    "backdoor_accuracy": ("backdoor_accuracy", "backdoor"),
    "certified_accuracy": ("certified_accuracy", "CA"),
    "certified_rate": ("certified_rate", "CR"),
}


@dataclass(frozen=True)
class Ungridded:
    """Published rows no grid holds: which, how many, why."""

    table: str
    dataset: str
    rows: int
    reason: str


@dataclass(frozen=True)
class StatusRow:
    grid: str
    table: str
    dataset: str
    attack: str
    setting: str
    sigma: float
    state: str
    ours: str
    paper: str
    max_diff: float | None
    worst: str
    scale: str


def _values(values: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    return {key: values.get(fields[key]) for key in _FIGURES if key in values}


def _text(figures: Mapping[str, Any]) -> str:
    parts = []
    for key, value in figures.items():
        name = _FIGURES[key][1]
        if value is None:
            parts.append(f"{name} -")
        elif isinstance(value, list):
            parts.append(f"{name} " + "/".join(f"{v:.3f}" for v in value))
        else:
            parts.append(f"{name} {value:.3f}")
    return "; ".join(parts)


def _compare(ref: Reference, ours: Mapping[str, Any] | None
             ) -> tuple[str, str, float | None, str]:
    """(state, our figures, largest |difference|, the figure it is in)."""
    published = {k: v for k, v in ref.values.items() if k in _FIGURES}
    if ours is None:
        return "not run", "-", None, "-"
    mine = _values(ours, {k: f for k, (f, _) in _FIGURES.items()})
    worst, where = 0.0, "-"
    for key, paper in published.items():
        theirs = paper if isinstance(paper, list) else [paper]
        got = mine[key] if isinstance(mine[key], list) else [mine[key]]
        for i, (p, o) in enumerate(zip(theirs, got, strict=True)):
            if o is None:
                continue
            if abs(o - p) > worst:
                worst = abs(o - p)
                where = _FIGURES[key][1] + (f"[{i}]" if isinstance(paper, list) else "")
    state = "reproduced" if worst <= TOLERANCE else "differs"
    return state, _text(mine), worst, where


def _stored_matches(ref: Reference, settings: Mapping[str, Any]) -> bool:
    dataset = settings["dataset"]
    label = dataset.get("name") or Path(dataset["source"]).stem
    attack = settings.get("attack")
    same_attack = (attack is None and ref.kind is None) or (
        attack is not None and (attack["kind"], attack.get("norm"), attack["rate"])
        == (ref.kind, ref.norm, ref.rate))
    return label == ref.dataset and same_attack and settings["method"].get("sigma") == ref.sigma


def _find(ref: Reference, key: str, cells: Sequence[Mapping[str, Any]]
          ) -> tuple[Mapping[str, Any] | None, bool]:
    """(our stored figures, whether found by key)."""
    for c in cells:
        if c["key"] == key:
            return c["ours"], True
    return next((c["ours"] for c in cells if _stored_matches(ref, c["settings"])), None), False


def status_rows(configs: Iterable[ExperimentConfig], results_dir: Path) -> list[StatusRow]:
    """One row per reference entry of ``configs``, compared with ``results_dir``'s summaries."""
    rows = []
    for config in configs:
        path = results_dir / f"reproduce_{config.name}.json"
        summary = json.loads(path.read_text()) if path.is_file() else {"cells": []}
        for ref in config.references:
            cell = next(c for c in config.cells if ref.matches(c))
            stored, by_key = _find(ref, cell.key, summary["cells"])
            state, ours, diff, worst = _compare(ref, stored)
            if stored is not None and not by_key:
                state += " (earlier settings encoding)"
            setting = "r_p = 0" if ref.kind is None else f"‖δ‖ = {ref.norm:g}, r_p = {ref.rate:g}"
            rows.append(StatusRow(
                grid=config.name, table=config.table or "-", dataset=ref.dataset,
                attack=ref.kind or "none", setting=setting, sigma=ref.sigma, state=state,
                ours=ours, paper=_text({k: v for k, v in ref.values.items() if k in _FIGURES}),
                max_diff=diff, worst=worst, scale=config.scale or "-",
            ))
    return rows


def render_status(rows: Sequence[StatusRow], ungridded: Sequence[Ungridded] = ()) -> str:
    """The Markdown status: a count per state, the per-row table, then the ungridded rows."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    missing = sum(u.rows for u in ungridded)
    tally = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    distinct = len({(r.table, r.dataset, r.attack, r.setting, r.sigma) for r in rows})
    again = "" if distinct == len(rows) else (
        f", {len(rows) - distinct} of them again in a second grid (another scale or split)")
    lines = [
        f"{len(rows)} published rows in grids ({tally}){again}; {missing} more without a grid. "
        f"Reproduced: every published figure of the row within {TOLERANCE} of ours (at the "
        "stated scale); SR is the undefended model's success rate over the backdoored inputs; "
        "CA / CR the certified accuracy / rate at the table's radii.",
        "",
        "| table | grid | data set | attack | setting | σ | state | ours | paper | max abs Δ "
        "(where) | scale |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = "-" if r.max_diff is None else f"{r.max_diff:.3f} ({r.worst})"
        lines.append(f"| {r.table} | `{r.grid}` | {r.dataset} | {r.attack} | {r.setting} | "
                     f"{r.sigma:g} | {r.state} | {r.ours} | {r.paper} | {diff} | {r.scale} |")
    if ungridded:
        lines += ["", "| table | data set | published rows | why no grid |", "|---|---|---|---|"]
        lines += [f"| {u.table} | {u.dataset} | {u.rows} | {u.reason} |" for u in ungridded]
    return "\n".join(lines) + "\n"


def write_between_markers(path: Path, text: str) -> None:
    """Replace what lies between :data:`MARKERS` in ``path`` (ValueError if they are missing)."""
    doc = path.read_text()
    start, end = MARKERS
    if start not in doc or end not in doc or doc.index(start) > doc.index(end):
        raise ValueError(f"{path} has no {start} ... {end} block")
    head, rest = doc.split(start, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{start}\n{text}{end}{tail}")
