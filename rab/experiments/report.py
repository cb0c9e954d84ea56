"""Tables and plots of an experiment: ours beside the published figures.

The Markdown table has the columns of the paper's Tables 2 and 5: the undefended model's
attack success rate ("Success Rate", Figure 3's vanilla model), clean / backdoor accuracy of
the smoothed model, and certified accuracy and certified rate at the reference radii, each
measured on the backdoored test set (non-target test points with the trigger and their true
labels, Table 1).  Every figure is printed as ``ours (paper)`` where the configuration gives the
published value.  The undefended success rate is printed with both denominators
(``rab.evaluation.vanilla``): the backdoored test inputs (the paper's figure is put beside
this one) and all test points.  The trigger norm column adds the largest effective norm of the
poisoned training patterns where clipping made it smaller.  Plots: certified accuracy against R
for every sigma (Figure 4b) and, where the grid asks for ``plots = ["empirical"]``, bars of the
accuracy on the backdoored test set of the undefended model beside the smoothed one per sigma
(Figure 3).  Cells with a poison-count certificate (partition aggregation, and
the plain K-NN's count beside a K-NN's radius) add the certified accuracy at poison counts
(``poison_count`` in the row, a column of the table, one more plot per data set and attack).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rab.evaluation import AttackSpec
from rab.experiments.config import Cell, ExperimentConfig
from rab.metrics import certified_accuracy, certified_rate
from rab.plots import accuracy_bars, certified_accuracy_curve, poison_count_curve

__all__ = ["cell_row", "empirical_bars", "markdown_table", "plot_curves", "plot_empirical",
           "plot_grid", "summary_record"]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pair(ours: float | None, paper: float | None) -> str:
    return _fmt(ours) if paper is None else f"{_fmt(ours)} ({paper:.3f})"


def _scored_set(result: dict[str, Any]) -> str:
    return "backdoor" if "backdoor" in result["certificates"] else "clean"


def cell_row(result: dict[str, Any], radii: Sequence[float]) -> dict[str, Any]:
    """Table figures of one stored cell result, recomputed at ``radii`` from its certificates."""
    subset = _scored_set(result)
    cert = result["certificates"][subset]
    pred, lab, rad = (np.asarray(cert[k]) for k in ("prediction", "label", "radius"))
    vanilla = result.get("vanilla") or {}
    metrics = result["metrics"]
    no_radius, none = result["method"]["name"] == "partition", [None] * len(radii)
    return {
        "vanilla_success_rate": vanilla.get("backdoor", {}).get("attack_success_rate"),
        "vanilla_success_rate_all_test": vanilla.get("backdoor", {}).get(
            "attack_success_rate_all_test"
        ),
        "effective_norm_range": (result.get("poisoning") or {}).get("effective_norm_range"),
        "vanilla_clean_accuracy": vanilla.get("clean", {}).get("accuracy"),
        "vanilla_backdoor_accuracy": vanilla.get("backdoor", {}).get("accuracy"),
        "success_rate": metrics.get("attack_success_rate"),
        "clean_accuracy": metrics["clean"]["accuracy"],
        "backdoor_accuracy": metrics.get("backdoor", {}).get("accuracy"),
        "scored_set": subset,
        "num_points": len(lab),
        # a partition vote certifies no radius: its columns read "-", not a certified 0
        "certified_accuracy": none if no_radius
        else certified_accuracy(pred, lab, rad, list(radii)).tolist(),
        "certified_rate": none if no_radius else certified_rate(rad, list(radii)).tolist(),
        "method": result["method"]["name"],
        "poison_count": metrics[subset].get("poison_count"),
    }


def _counts(row: dict[str, Any]) -> str:
    """Certified accuracy at the poison counts, e.g. ``r≥0 0.95, r≥10 0.81, ...`` (or -)."""
    block = row.get("poison_count")
    if not block:
        return "-"
    shown = [f"r≥{r} {a:.3f}" for r, a in block["certified_accuracy"].items() if a > 0]
    return f"{block['classifier']}: " + ", ".join(shown or ["none"])


def _norm(attack: AttackSpec | None, row: dict[str, Any]) -> str:
    """The nominal trigger norm, with the largest effective one where clipping shrank it."""
    if attack is None or attack.norm is None:
        return "-"
    effective = row["effective_norm_range"]
    if effective is None or effective[1] >= attack.norm * (1 - 1e-6):
        return f"{attack.norm:g}"
    return f"{attack.norm:g} (eff. ≤ {effective[1]:.3g})"


def _radii(config: ExperimentConfig) -> tuple[float, ...]:
    return config.reference_radii or config.cells[0].radii


def summary_record(config: ExperimentConfig, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """JSON summary: per cell its settings, our figures at the radii and the paper's."""
    radii = _radii(config)
    cells = []
    for cell in config.cells:
        if cell.key not in results:
            continue
        ref = config.reference_for(cell)
        result = results[cell.key]["result"]
        cells.append({
            "key": cell.key, "label": cell.label, "settings": cell.settings(),
            "ours": cell_row(result, radii), "paper": None if ref is None else dict(ref.values),
            "seconds": result.get("seconds"),
        })
    return {"name": config.name, "description": config.description, "radii": list(radii),
            "reference_source": config.reference_source, "cells": cells}


def markdown_table(config: ExperimentConfig, results: dict[str, dict[str, Any]]) -> str:
    """The paper-style table, ``ours (paper)`` in every cell with a published figure."""
    radii = _radii(config)
    rs = "/".join(f"{r:g}" for r in radii)
    head = ["data set", "method", "attack", "‖δ‖", "r_p", "σ",
            "success rate, vanilla (÷ backdoored inputs)", "success rate, vanilla (÷ all test)",
            "success rate, smoothed", "clean acc, vanilla", "backdoor acc, vanilla",
            "clean acc", "backdoor acc"]
    head += [f"cert. acc R={r:g}" for r in radii] + [f"cert. rate R={r:g}" for r in radii]
    head += ["cert. acc at poison count r"]
    scale = [f"Scale: {config.scale.strip()}", ""] if config.scale else []
    lines = [f"### {config.name}", "", config.description.strip(), "", *scale,
             f"Figures: ours (paper). Certified accuracy / rate on the backdoored test set at "
             f"R = {rs}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in config.cells:
        if cell.key not in results:
            continue
        row = cell_row(results[cell.key]["result"], radii)
        ref = config.reference_for(cell)
        paper: dict[str, Any] = {} if ref is None else dict(ref.values)
        a = cell.attack
        cols = [cell.dataset.label, row["method"], "-" if a is None else a.kind, _norm(a, row),
                "-" if a is None else f"{a.rate:g}", f"{cell.method.sigma:g}",
                _pair(row["vanilla_success_rate"], paper.get("success_rate")),
                _fmt(row["vanilla_success_rate_all_test"]),
                _fmt(row["success_rate"]),
                _pair(row["vanilla_clean_accuracy"], paper.get("vanilla_clean_accuracy")),
                _pair(row["vanilla_backdoor_accuracy"], paper.get("vanilla_backdoor_accuracy")),
                _pair(row["clean_accuracy"], paper.get("clean_accuracy")),
                _pair(row["backdoor_accuracy"], paper.get("backdoor_accuracy"))]
        for name in ("certified_accuracy", "certified_rate"):
            published = paper.get(name) or [None] * len(radii)
            cols += [_pair(o, p) for o, p in zip(row[name], published, strict=True)]
        cols.append(_counts(row))
        lines.append("| " + " | ".join(cols) + " |")
    if config.reference_source:
        lines += ["", f"Published figures: {config.reference_source}"]
    if config.notes:
        lines += ["", config.notes.strip()]
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


def plot_curves(config: ExperimentConfig, results: dict[str, dict[str, Any]],
                out_dir: Path) -> list[Path]:
    """One PNG per (data set, attack): certified accuracy vs R, one curve per sigma (Fig. 4b)."""
    groups: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for cell in config.cells:
        if cell.key in results:
            attack = "no attack" if cell.attack is None else cell.attack.label
            groups[(cell.dataset.label, attack)].append(cell)
    paths = []
    for (dataset, attack), cells in groups.items():
        curves, counts = {}, {}
        for cell in cells:
            result = results[cell.key]["result"]
            cert = result["certificates"][_scored_set(result)]
            label = f"{cell.method.name}, σ = {cell.method.sigma:g}"
            if cell.method.name != "partition":  # no radius: a partition vote has none
                curves[label] = (np.asarray(cert["prediction"]), np.asarray(cert["label"]),
                                 np.asarray(cert["radius"]))
            if "poison_count" in cert:
                count = cert["poison_count"]
                counts[f"{count['classifier']}"] = (
                    np.asarray(count["prediction"]), np.asarray(cert["label"]),
                    np.asarray(count["count"]))
        stem = out_dir / f"{_slug(dataset)}__{_slug(attack)}"
        if curves:
            paths.append(certified_accuracy_curve(  # not with_suffix: "r_p_0.02" is no suffix
                curves, stem.parent / f"{stem.name}.png",
                title=f"{dataset}, {attack}: certified accuracy"))
        if counts:
            paths.append(poison_count_curve(
                counts, stem.parent / f"{stem.name}__poison_count.png",
                title=f"{dataset}, {attack}: certified accuracy vs poison count"))
    return paths


def plot_empirical(config: ExperimentConfig, results: dict[str, dict[str, Any]],
                   out_dir: Path) -> list[Path]:
    """Figure 3: per data set, the accuracy on the backdoored test set (triggered non-target
    inputs, true labels) of the undefended model and of the smoothed model at each sigma, one
    group of bars per attack; one PNG per data set."""
    radii = _radii(config)
    return empirical_bars(config, {key: cell_row(results[key]["result"], radii)
                                   for key in results}, out_dir)


def empirical_bars(config: ExperimentConfig, rows: Mapping[str, Mapping[str, Any]],
                   out_dir: Path) -> list[Path]:
    """:func:`plot_empirical` from table rows (:func:`cell_row`, by cell key), such as the
    ``ours`` of a written summary (:func:`summary_record`) when the cell files are gone."""
    groups: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for cell in config.cells:
        row = rows.get(cell.key)
        if row is None or cell.attack is None or row["backdoor_accuracy"] is None:
            continue
        bars = groups[cell.dataset.label].setdefault(cell.attack.label, {})
        if row["vanilla_backdoor_accuracy"] is not None:
            bars["vanilla"] = row["vanilla_backdoor_accuracy"]
        bars[f"RAB σ = {cell.method.sigma:g}"] = row["backdoor_accuracy"]
    return [
        accuracy_bars(bars, out_dir / f"{_slug(dataset)}__empirical.png",
                      title=f"{dataset}: accuracy on backdoored inputs")
        for dataset, bars in groups.items()
    ]


def plot_grid(config: ExperimentConfig, results: dict[str, dict[str, Any]],
              out_dir: Path) -> list[Path]:
    """The plots the grid asks for (``plots``: "curves" and / or "empirical")."""
    paths = plot_curves(config, results, out_dir) if "curves" in config.plots else []
    if "empirical" in config.plots:
        paths += plot_empirical(config, results, out_dir)
    return paths
