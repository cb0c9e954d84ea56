"""Loader for ``.npz`` archives in the layout of ``../shared/data``.

Arrays ``X_train, y_train, X_test, y_test`` (or ``X, y`` without an official split, which are then
split with :func:`rab.data.split.seeded_split`). Images may be channel-last ``uint8`` (as in the
shared CIFAR file) or grayscale ``(n, H, W)``; they become channel-first floats in [0, 1]. The
archive is opened with ``allow_pickle=False``: an array holding pickled Python objects is refused.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rab.data.build import Layout, from_arrays
from rab.data.dataset import Dataset
from rab.data.preprocess import PIXELS, RAW, Preprocessing
from rab.data.split import seeded_split

__all__ = ["load_npz"]

_SPLIT_KEYS = ("X_train", "y_train", "X_test", "y_test")


def _open(path: Path) -> np.lib.npyio.NpzFile:
    """Open an ``.npz`` archive with ``allow_pickle=False``, with clear errors."""
    if not path.is_file():
        raise FileNotFoundError(f"npz file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable .npz archive: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array, not an .npz archive of named arrays")
    return archive


def _read(archive: np.lib.npyio.NpzFile, path: Path, keys: Sequence[str]) -> list[np.ndarray]:
    """The arrays ``keys``; an array of pickled objects raises ``ValueError`` naming it."""
    out = []
    for key in keys:
        try:
            out.append(archive[key])
        except ValueError as exc:
            raise ValueError(
                f"array {key!r} in {path} holds pickled Python objects; refusing to load it "
                "(allow_pickle=False). Store plain numeric arrays."
            ) from exc
    return out


def load_npz(
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    classes: Sequence[int] | None = None,
    preprocessing: Preprocessing | None = None,
    feature_range: tuple[float, float] | None = None,
    layout: Layout = "auto",
    name: str | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    stratify: bool = True,
) -> Dataset:
    """Load an npz dataset.

    ``class_names[label]`` names the stored labels (e.g. :data:`~rab.data.classes.CIFAR10_CLASSES`
    for the shared CIFAR file, whose labels are the original indices 0 and 2). ``classes`` picks and
    orders classes (default: every training label, ascending), relabelled to ``0..C-1``.
    ``preprocessing`` defaults to :data:`~rab.data.preprocess.PIXELS` for ``uint8`` features and
    :data:`~rab.data.preprocess.RAW` otherwise. ``test_fraction``, ``split_seed`` and
    ``stratify`` only apply to archives with ``X, y`` and no official split.
    """
    path = Path(path)
    meta: dict[str, Any] = {"source": {"format": "npz", "file": path.name}}
    with _open(path) as archive:
        files = set(archive.files)
        if set(_SPLIT_KEYS) <= files:
            arrays = _read(archive, path, _SPLIT_KEYS)
        elif {"X", "y"} <= files:
            X, y = _read(archive, path, ("X", "y"))
            if len(X) != len(y):
                raise ValueError(f"{path}: X has {len(X)} samples but y has {len(y)} labels")
            train_idx, test_idx, meta["split"] = seeded_split(
                y, test_fraction=test_fraction, seed=split_seed, stratify=stratify
            )
            arrays = [X[train_idx], y[train_idx], X[test_idx], y[test_idx]]
        else:
            raise ValueError(
                f"{path} must hold X_train, y_train, X_test, y_test (or X, y); "
                f"it has {sorted(files)}"
            )
    if preprocessing is None:
        preprocessing = PIXELS if arrays[0].dtype == np.uint8 else RAW
    return from_arrays(
        *arrays,
        name=name or path.stem,
        class_names=class_names,
        classes=classes,
        preprocessing=preprocessing,
        feature_range=feature_range,
        layout=layout,
        meta=meta,
    )
