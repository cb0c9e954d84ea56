"""Training-set poisoning and backdoored test sets, following the authors' protocol.

Poisoning (REFERENCE section 4): draw ``floor(r_p * n)`` training points from the non-target
classes with a seeded generator (without replacement), add the trigger (clipped to the feature
range), relabel them to the target, and *replace* the originals (the authors' protocol, default) or
*append* the poisoned copies. All-to-one uses one target label; all-to-all maps each class ``c`` to
``permutation[c]`` (e.g. :func:`shift_permutation`, ``c -> c + 1 mod C``).

The result records exactly which rows changed, the actual patterns ``delta_i`` after clipping, and
``sqrt(sum_i ||delta_i||_2^2)``: the left-hand side of eq. 14, which a certificate of radius ``R``
covers when it is below ``R`` (eq. 15 for one pattern on ``r`` points: ``||delta|| < R/sqrt(r)``).

A backdoored test set (the paper's protocol) holds the non-target test points with the trigger
and their *true* labels; the attack-success view labels them with the target instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rab.attacks.triggers import Trigger, apply_trigger
from rab.data.dataset import Dataset

__all__ = [
    "BackdoorTestSet",
    "PoisonResult",
    "backdoor_test_set",
    "label_map",
    "poison_count",
    "poison_training_set",
    "shift_permutation",
]

Target = int | Sequence[int] | np.ndarray


def shift_permutation(num_classes: int, shift: int = 1) -> np.ndarray:
    """The all-to-all permutation ``c -> (c + shift) mod C``."""
    if num_classes < 2 or shift % num_classes == 0:
        raise ValueError(f"shift {shift} maps every one of {num_classes} classes to itself")
    return (np.arange(num_classes) + shift) % num_classes


def label_map(target: Target, num_classes: int) -> np.ndarray:
    """Poisoned label of each class: ``target`` for all-to-one, ``permutation[c]`` for all-to-all.

    A class that maps to itself is not poisoned (for all-to-one, the target class).
    """
    if np.ndim(target) == 0:
        t = int(target)  # type: ignore[arg-type]
        if not 0 <= t < num_classes:
            raise ValueError(f"target class {t} is outside 0..{num_classes - 1}")
        return np.full(num_classes, t, dtype=np.int64)
    perm = np.asarray(target)
    if perm.shape != (num_classes,) or sorted(perm.tolist()) != list(range(num_classes)):
        raise ValueError(
            f"an all-to-all target must be a permutation of 0..{num_classes - 1}, got {perm}"
        )
    if (perm == np.arange(num_classes)).all():
        raise ValueError("the all-to-all permutation is the identity: nothing would be poisoned")
    return perm.astype(np.int64)


@dataclass(frozen=True, eq=False)
class PoisonResult:
    """A poisoned training set and exactly what was done to it.

    Attributes:
        dataset: the poisoned data set (test split unchanged, ``meta["poisoning"]`` added).
        poisoned_indices: rows of ``dataset.X_train`` that hold poisoned samples (ascending).
        source_indices: rows of the clean training set they were made from (same order).
        original_labels: the clean labels of those rows; ``dataset.y_train[poisoned_indices]``
            holds the poisoned ones.
        patterns: ``float32`` ``(r, *input_shape)``, the actual ``delta_i`` after clipping.
        effective_norms: ``||delta_i||_2`` (``float64``, ``(r,)``).
        requested_norm: the trigger's nominal norm, or ``None`` (patch / blend triggers).
        total_norm: ``sqrt(sum_i ||delta_i||^2)``, the quantity eq. 14 bounds.
        mode: ``"replace"`` or ``"append"``.
        seed: the generator seed that chose the rows.
    """

    dataset: Dataset
    poisoned_indices: np.ndarray
    source_indices: np.ndarray
    original_labels: np.ndarray
    patterns: np.ndarray
    effective_norms: np.ndarray
    requested_norm: float | None
    total_norm: float
    mode: Literal["replace", "append"]
    seed: int

    @property
    def num_poisoned(self) -> int:
        """r, the number of poisoned training samples."""
        return len(self.poisoned_indices)


def poison_count(
    rate: float, train_counts: Sequence[int] | np.ndarray, target: Target
) -> int:
    """r = floor(r_p * n), the number of training points a poisoning rate ``rate`` poisons,
    given the training set's per-class counts (n their sum).

    The one rule for every caller (the library and the service's early check): ``rate`` must
    lie in [0, 1] and poison at least one point and at most the points whose class
    ``label_map(target)`` changes (ValueError otherwise, also for a target outside the classes).
    """
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"poisoning rate r_p must lie in [0, 1], got {rate!r}")
    counts = np.asarray(train_counts, dtype=np.int64)
    mapping = label_map(target, len(counts))
    n = int(counts.sum())
    count = int(np.floor(rate * n))
    if count == 0:
        raise ValueError(f"r_p={rate} of {n} training points poisons none; raise the rate")
    eligible = int(counts[mapping != np.arange(len(counts))].sum())
    if count > eligible:
        raise ValueError(
            f"r_p={rate} asks for {count} poisoned points but only {eligible} training "
            "points are outside the target class"
        )
    return count


def poison_training_set(
    dataset: Dataset,
    trigger: Trigger,
    *,
    rate: float,
    target: Target,
    seed: int,
    mode: Literal["replace", "append"] = "replace",
    clip: bool = True,
) -> PoisonResult:
    """Poison ``floor(rate * n)`` training points drawn from the non-target classes.

    Rows are chosen by ``np.random.default_rng(seed).choice`` without replacement among the points
    whose class ``label_map(target)`` changes; ``clip=False`` skips clipping to the feature range
    (the authors did not clip their blending trigger), and the poisoned set then declares no
    feature range (its values may leave it). Raises ``ValueError`` for a rate outside
    [0, 1], a trigger of the wrong shape, an unknown mode, or more points than eligible.
    """
    if mode not in ("replace", "append"):
        raise ValueError(f"mode must be 'replace' or 'append', got {mode!r}")
    if trigger.input_shape != dataset.input_shape:
        raise ValueError(
            f"trigger is for inputs of shape {trigger.input_shape}, data set has "
            f"{dataset.input_shape}"
        )
    mapping = label_map(target, dataset.num_classes)
    count = poison_count(
        rate, np.bincount(dataset.y_train, minlength=dataset.num_classes), target
    )
    eligible = np.flatnonzero(mapping[dataset.y_train] != dataset.y_train)
    rng = np.random.default_rng(seed)
    source = np.sort(rng.choice(eligible, size=count, replace=False))
    applied = apply_trigger(trigger, dataset.X_train[source], dataset.feature_range, clip=clip)
    labels = mapping[dataset.y_train[source]]
    if mode == "replace":
        X = np.array(dataset.X_train)
        y = np.array(dataset.y_train)
        X[source], y[source] = applied.X, labels
        rows = source
    else:
        X = np.concatenate([dataset.X_train, applied.X])
        y = np.concatenate([dataset.y_train, labels])
        n = len(dataset.y_train)
        rows = np.arange(n, n + count, dtype=np.int64)
    total = float(np.sqrt(np.sum(applied.effective_norms**2)))
    record: dict[str, Any] = {
        "trigger": trigger.describe(),
        "rate": float(rate),
        "target": mapping.tolist() if np.ndim(target) else int(target),  # type: ignore[arg-type]
        "mode": mode,
        "seed": int(seed),
        "clip": bool(clip),
        "num_poisoned": int(count),
        "requested_norm": trigger.requested_norm,
        "total_norm": total,
        "effective_norm_range": (
            [float(applied.effective_norms.min()), float(applied.effective_norms.max())]
            if count
            else None
        ),
        "clean_sha256": dataset.sha256,
    }
    poisoned = dataclasses.replace(
        dataset,
        X_train=X,
        y_train=y,
        feature_range=dataset.feature_range if clip else None,
        name=f"{dataset.name}+{trigger.name}",
        meta=dataset.with_meta(poisoning=record),
    )
    return PoisonResult(
        dataset=poisoned,
        poisoned_indices=rows,
        source_indices=source,
        original_labels=dataset.y_train[source].copy(),
        patterns=applied.patterns,
        effective_norms=applied.effective_norms,
        requested_norm=trigger.requested_norm,
        total_norm=total,
        mode=mode,
        seed=int(seed),
    )


@dataclass(frozen=True, eq=False)
class BackdoorTestSet:
    """Triggered non-target test points.

    ``y_true`` (their true labels) is the paper's protocol for certified accuracy on backdoored
    inputs; ``y_attack`` (the poisoned label) gives the attack-success rate.
    """

    X: np.ndarray
    y_true: np.ndarray
    y_attack: np.ndarray
    source_indices: np.ndarray
    effective_norms: np.ndarray


def backdoor_test_set(
    dataset: Dataset, trigger: Trigger, *, target: Target, clip: bool = True
) -> BackdoorTestSet:
    """Add ``trigger`` to every test point whose class ``target`` would change."""
    if trigger.input_shape != dataset.input_shape:
        raise ValueError(
            f"trigger is for inputs of shape {trigger.input_shape}, data set has "
            f"{dataset.input_shape}"
        )
    mapping = label_map(target, dataset.num_classes)
    source = np.flatnonzero(mapping[dataset.y_test] != dataset.y_test)
    if source.size == 0:
        raise ValueError("the test split has no points outside the target class")
    applied = apply_trigger(trigger, dataset.X_test[source], dataset.feature_range, clip=clip)
    y_true = dataset.y_test[source].copy()
    return BackdoorTestSet(
        X=applied.X,
        y_true=y_true,
        y_attack=mapping[y_true],
        source_indices=source,
        effective_norms=applied.effective_norms,
    )
