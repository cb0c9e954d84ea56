"""Certified-accuracy-vs-radius curves (the paper's Figure 4 style), rendered with matplotlib.

Uses the non-interactive Agg backend, so it works on servers without a display.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from rab.extras import require
from rab.metrics import certified_accuracy


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
    require("plots", "certified-accuracy plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=120)
    for label, (pred, lab, rad) in curves.items():
        ax.plot(grid, certified_accuracy(pred, lab, rad, grid.tolist()), label=label)
    ax.set_xlabel("radius R (total L2 norm of backdoor patterns, eq. 14)")
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
