"""Seeded train/test splitting for data sets that ship without an official split.

Some files are sorted (UCI Spambase lists all 1,813 spam rows first), so a head/tail split would
put a single class in the test set. :func:`seeded_split` shuffles with a fixed seed through
:func:`sklearn.model_selection.train_test_split` (stratified by label by default, so both splits
keep the class proportions) and returns index arrays in shuffled order. The split is a pure
function of ``(labels, test_fraction, seed, stratify)``; the loaders record these in
``Dataset.meta["split"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rab.extras import require

__all__ = ["seeded_split"]


def seeded_split(
    y: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Split ``range(len(y))`` into shuffled train and test index arrays.

    ``test_fraction`` of the samples (rounded up, as scikit-learn does) go to the test split.
    Returns ``(train_idx, test_idx, record)`` where ``record`` describes the split for provenance.
    Raises ``ValueError`` for a fraction outside (0, 1) or a split that would be empty.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    n = len(y)
    n_test = int(np.ceil(test_fraction * n))
    if n_test == 0 or n_test == n:
        raise ValueError(
            f"test_fraction={test_fraction} of {n} samples leaves an empty train or test split"
        )
    require("sklearn", "seeded train/test splits")
    from sklearn.model_selection import train_test_split

    idx = np.arange(n, dtype=np.int64)
    train_idx, test_idx = train_test_split(
        idx,
        test_size=test_fraction,
        random_state=int(seed),
        shuffle=True,
        stratify=np.asarray(y) if stratify else None,
    )
    record = {
        "method": "sklearn.model_selection.train_test_split, shuffled",
        "test_fraction": float(test_fraction),
        "seed": int(seed),
        "stratify": bool(stratify),
    }
    return np.asarray(train_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64), record
