"""Class selection: keep a (source, target) pair or any subset of classes, relabelled 0..C-1."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from rab.data.dataset import Dataset

__all__ = ["CIFAR10_CLASSES", "MNIST_CLASSES", "relabel", "select_classes"]

MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def relabel(
    y: np.ndarray, classes: Sequence[int], *, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Keep samples whose label is in ``classes`` and relabel ``classes[k]`` to ``k``.

    Returns ``(keep_mask, new_labels_of_kept_samples)``. Raises ``ValueError`` for duplicate
    classes, fewer than two classes, or (with ``num_classes``) labels outside ``0..num_classes-1``.
    """
    chosen = [int(c) for c in classes]
    if len(chosen) < 2:
        raise ValueError(f"select at least two classes, got {chosen}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"classes must not repeat, got {chosen}")
    if num_classes is not None:
        outside = [c for c in chosen if not 0 <= c < num_classes]
        if outside:
            raise ValueError(f"classes {outside} are outside 0..{num_classes - 1}")
    labels = np.asarray(y)
    keep = np.isin(labels, chosen)
    kept = labels[keep]
    new = np.empty(len(kept), dtype=np.int64)
    for k, c in enumerate(chosen):
        new[kept == c] = k
    return keep, new


def _resolve(dataset: Dataset, classes: Sequence[int | str]) -> list[int]:
    out = []
    for c in classes:
        if isinstance(c, str):
            if c not in dataset.class_names:
                raise ValueError(f"unknown class name {c!r}; known: {dataset.class_names}")
            out.append(dataset.class_names.index(c))
        else:
            out.append(int(c))
    return out


def select_classes(dataset: Dataset, classes: Sequence[int | str]) -> Dataset:
    """A new dataset with only ``classes`` (labels or names), relabelled in the given order.

    ``classes[k]`` becomes label ``k``, so pass ``[target, other]`` to make the backdoor target
    class 0 as in the authors' binary tasks. The mapping back to the labels of the original source
    is kept in ``meta["original_labels"]`` (``original_labels[k]`` is the source label of new
    class ``k``, composed across repeated selections). Sample order is preserved.
    """
    chosen = _resolve(dataset, classes)
    keep_tr, y_tr = relabel(dataset.y_train, chosen, num_classes=dataset.num_classes)
    keep_te, y_te = relabel(dataset.y_test, chosen, num_classes=dataset.num_classes)
    previous = dataset.meta.get("original_labels", list(range(dataset.num_classes)))
    return dataclasses.replace(
        dataset,
        X_train=dataset.X_train[keep_tr],
        y_train=y_tr,
        X_test=dataset.X_test[keep_te],
        y_test=y_te,
        class_names=tuple(dataset.class_names[c] for c in chosen),
        meta=dataset.with_meta(original_labels=[int(previous[c]) for c in chosen]),
    )
