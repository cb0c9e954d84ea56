"""Certified accuracy against the radius (the paper's Figure 4 style) or the poison count.

Uses the non-interactive Agg backend, so it works on servers without a display.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from rab.metrics import certified_accuracy, count_certified_accuracy


def certified_accuracy_curve(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike, ArrayLike]],
    path: str | Path,
    *,
    title: str = "Certified accuracy vs. radius",
    num_points: int = 200,
) -> Path:
    """Plot certified accuracy against the radius R for one or more labelled test sets.

    ``curves`` maps a legend label to ``(prediction, labels, radius)``; the curve of each is
    ``R -> mean(y_hat == y and radius > R)`` on a grid from 0 to the largest finite radius.
    Returns the path of the PNG written.
    """
    if not curves:
        raise ValueError("certified_accuracy_curve needs at least one curve")
    finite_max = max(
        (
            float(np.max(r[np.isfinite(r)], initial=0.0))
            for _, _, r in map(_arrays, curves.values())
        ),
        default=0.0,
    )
    grid = np.linspace(0.0, max(finite_max, 1e-3) * 1.05, num_points)
    lines = {label: (grid, certified_accuracy(pred, lab, rad, grid.tolist()))
             for label, (pred, lab, rad) in curves.items()}
    return _plot(lines, path, title,
                 "radius R (total L2 norm of backdoor patterns, eq. 14)")


def poison_count_curve(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike, ArrayLike]],
    path: str | Path,
    *,
    title: str = "Certified accuracy vs. poison count",
) -> Path:
    """Plot certified accuracy against the poison count r (``rab.partition``): ``curves`` maps
    a label to ``(prediction, labels, count)``, each curve r -> mean(y_hat == y and count >= r)
    at every integer r from 0 to the largest count. Returns the PNG's path."""
    if not curves:
        raise ValueError("poison_count_curve needs at least one curve")
    top = max(int(np.max(np.asarray(c), initial=0)) for _, _, c in curves.values())
    grid = np.arange(0, max(top, 1) + 2)
    lines = {label: (grid, count_certified_accuracy(pred, lab, cnt, grid.tolist()))
             for label, (pred, lab, cnt) in curves.items()}
    return _plot(lines, path, title,
                 "poison count r (training points inserted, deleted or changed)", step=True)


def _plot(lines: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str,
          xlabel: str, *, step: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=120)
    for label, (x, values) in lines.items():
        if step:
            ax.step(x, values, where="post", label=label)
        else:
            ax.plot(x, values, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def _arrays(item: tuple[ArrayLike, ArrayLike, ArrayLike]) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(a) for a in item)
