"""Certified accuracy against the radius (the paper's Figure 4 style) or the poison count,
grouped accuracy bars (its Figure 3) and pictures of the backdoor patterns (its Figure 5),
rendered with matplotlib.

Uses the non-interactive Agg backend, so it works on servers without a display.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from rab.extras import require
from rab.metrics import certified_accuracy, count_certified_accuracy

if TYPE_CHECKING:
    from rab.attacks.triggers import Trigger


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


def accuracy_bars(
    groups: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    title: str = "Empirical accuracy",
    ylabel: str = "accuracy on backdoored inputs",
) -> Path:
    """Grouped bars: ``groups`` maps a group (e.g. an attack) to ``{bar label: value}`` (e.g. the
    vanilla model and the smoothed one per sigma); bars of the same label share a colour.  The
    legend sits outside the axes, right of them, so it never covers a bar.  Returns the PNG's
    path."""
    plt = _pyplot("accuracy bars")
    fig, _ = _bar_figure(plt, groups, title=title, ylabel=ylabel)
    return _save(fig, plt, path)


def _bar_figure(plt: Any, groups: Mapping[str, Mapping[str, float]], *, title: str,
                ylabel: str) -> tuple[Any, Any]:
    """The figure and axes of :func:`accuracy_bars`, laid out, not yet saved."""
    if not groups:
        raise ValueError("accuracy_bars needs at least one group")
    labels = list(dict.fromkeys(label for bars in groups.values() for label in bars))
    fig, ax = plt.subplots(figsize=(7.5, 4.0), dpi=120)
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = [bars.get(label, np.nan) for bars in groups.values()]
        ax.bar(np.arange(len(groups)) + (i - (len(labels) - 1) / 2) * width, values, width,
               label=label)
    ax.set_xticks(np.arange(len(groups)), list(groups), rotation=15, ha="right",
                  rotation_mode="anchor")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig, ax


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def _plot(lines: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str,
          xlabel: str, *, step: bool = False) -> Path:
    plt = _pyplot("certified-accuracy plots")
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
    return _save(fig, plt, path)


def _pyplot(purpose: str) -> Any:
    """matplotlib's pyplot on the Agg backend (the ``plots`` extra, named if missing)."""
    require("plots", purpose)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _arrays(item: tuple[ArrayLike, ArrayLike, ArrayLike]) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(a) for a in item)


def trigger_pictures(
    triggers: Sequence[Trigger],
    image: ArrayLike,
    path: str | Path,
    *,
    feature_range: tuple[float, float] | None = (0.0, 1.0),
    unclipped: Collection[str] = ("blending",),
    title: str = "Backdoor patterns",
) -> Path:
    """The paper's Figure 5: each trigger's pattern delta (top row, on a symmetric colour
    scale so that its sign shows, with its effective L2 norm) and ``image`` with the trigger
    applied (bottom row). Triggers are clipped to ``feature_range`` as the attack applies them,
    except those named in ``unclipped`` (the authors add the blending pattern unclipped); the
    picture itself is clipped to the range for display only. ``image`` has the triggers' input
    shape: one channel (1, H, W) is drawn in grey, three (3, H, W) in colour. Returns the PNG
    written."""
    plt = _pyplot("pictures of the backdoor patterns")
    from rab.attacks.triggers import apply_trigger

    if not triggers:
        raise ValueError("trigger_pictures needs at least one trigger")
    clean = np.asarray(image, dtype=np.float32)
    if clean.ndim != 3 or clean.shape[0] not in (1, 3):
        raise ValueError(f"need one (1, H, W) or (3, H, W) image, got shape {clean.shape}")
    fig, axes = plt.subplots(2, len(triggers), figsize=(2.4 * len(triggers), 5.0), dpi=120,
                             squeeze=False)
    for column, trigger in enumerate(triggers):
        result = apply_trigger(trigger, clean[None], feature_range,
                               clip=trigger.name not in unclipped)
        pattern = result.patterns[0]
        scale = float(np.max(np.abs(pattern))) or 1.0
        shown = pattern.mean(axis=0)  # the sign and place of the pattern, channels averaged
        axes[0, column].imshow(shown, cmap="RdBu_r", vmin=-scale, vmax=scale)
        axes[0, column].set_title(f"{trigger.name}\n||delta|| = {result.effective_norms[0]:.2f}",
                                  fontsize=8)
        triggered = result.X[0]
        low, high = feature_range or (float(triggered.min()), float(triggered.max()))
        picture = (np.transpose(triggered, (1, 2, 0)) - low) / max(high - low, 1e-12)
        axes[1, column].imshow(np.clip(picture.squeeze(), 0.0, 1.0),
                               cmap="gray" if clean.shape[0] == 1 else None, vmin=0.0, vmax=1.0)
        axes[1, column].set_title("x + delta", fontsize=8)
        for ax in axes[:, column]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return _save(fig, plt, path)
