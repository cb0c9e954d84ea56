"""Image loaders through torchvision: MNIST, CIFAR-10 and ImageNet-style class folders.

``root`` is a directory in torchvision's on-disk layout. ``download=True`` lets torchvision fetch
MNIST or CIFAR-10 (internet needed; a failed download raises :class:`DownloadError`); with the
default ``download=False`` nothing is downloaded and a missing data set raises
``FileNotFoundError``. Pixels are divided by 255 (features in [0, 1], channel-first). torchvision
reads CIFAR-10's pickled batches only after checking their MD5 against the official files, so no
user-supplied pickle is ever loaded. torchvision (and so torch) is imported only when one of these
functions is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rab.data.build import from_arrays
from rab.data.classes import CIFAR10_CLASSES, MNIST_CLASSES
from rab.data.dataset import Dataset
from rab.data.preprocess import PIXELS
from rab.data.split import seeded_split
from rab.extras import require

__all__ = ["DownloadError", "load_cifar10", "load_image_folder", "load_mnist"]


class DownloadError(RuntimeError):
    """torchvision could not download a data set (no internet, mirrors down, a bad checksum, a
    directory that cannot be written)."""


def _open(cls: Any, root: str | Path, train: bool, download: bool) -> Any:
    """One split of torchvision's data set ``cls`` under ``root``.

    Raises FileNotFoundError when it is missing and not downloaded, DownloadError when the
    download fails.
    """
    name = cls.__name__
    if not download:
        try:
            return cls(root=str(root), train=train)
        except RuntimeError as exc:
            raise FileNotFoundError(
                f"{name} not found under {root} ({exc}); put torchvision's files there or "
                "pass download=True (needs internet)"
            ) from exc
    try:
        return cls(root=str(root), train=train, download=True)
    except (RuntimeError, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise DownloadError(f"downloading {name} into {root} failed: {reason}") from exc


def _torchvision_pair(
    cls_name: str, root: str | Path, download: bool
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    require("torch", f"torchvision's {cls_name} files")
    from torchvision import datasets

    cls = getattr(datasets, cls_name)
    out = []
    for train in (True, False):
        ds = _open(cls, root, train, download)
        data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
        targets = ds.targets.numpy() if hasattr(ds.targets, "numpy") else np.asarray(ds.targets)
        out.append((data, targets))
    return out[0], out[1]


def _official(
    cls_name: str,
    root: str | Path,
    download: bool,
    class_names: Sequence[str],
    classes: Sequence[int] | None,
    layout: Any,
) -> Dataset:
    (Xtr, ytr), (Xte, yte) = _torchvision_pair(cls_name, root, download)
    return from_arrays(
        Xtr,
        ytr,
        Xte,
        yte,
        name=cls_name.lower(),
        class_names=class_names,
        classes=classes,
        preprocessing=PIXELS,
        layout=layout,
        meta={"source": {"format": f"torchvision.{cls_name}", "root": str(root)}},
    )


def load_mnist(
    root: str | Path, *, download: bool = False, classes: Sequence[int] | None = None
) -> Dataset:
    """MNIST (60,000 / 10,000, shape ``(1, 28, 28)``) via ``torchvision.datasets.MNIST``.

    ``classes`` selects and orders digits, relabelled ``0..C-1`` (e.g. ``[0, 1]``).
    """
    return _official("MNIST", root, download, MNIST_CLASSES, classes, "auto")


def load_cifar10(
    root: str | Path, *, download: bool = False, classes: Sequence[int] | None = None
) -> Dataset:
    """CIFAR-10 (50,000 / 10,000, shape ``(3, 32, 32)``) via ``torchvision.datasets.CIFAR10``.

    ``classes`` selects and orders classes by CIFAR-10 index (airplane 0, bird 2, ...).
    """
    return _official("CIFAR10", root, download, CIFAR10_CLASSES, classes, "channels_last")


def _read_folder(root: Path, size: int | tuple[int, int] | None) -> tuple[Any, np.ndarray]:
    require("torch", "image folders")
    from torchvision import datasets, transforms

    steps: list[Any] = [transforms.Resize(size)] if size is not None else []
    ds = datasets.ImageFolder(
        str(root), transform=transforms.Compose([*steps, transforms.PILToTensor()])
    )
    images: list[np.ndarray] = []
    for i in range(len(ds)):
        img = ds[i][0].numpy()
        if images and img.shape != images[0].shape:
            raise ValueError(
                f"images under {root} have different sizes ({images[0].shape} and {img.shape} "
                f"at {ds.samples[i][0]}); pass size=(height, width)"
            )
        images.append(img)
    return ds, np.stack(images)


def load_image_folder(
    root: str | Path,
    *,
    test_root: str | Path | None = None,
    size: int | tuple[int, int] | None = None,
    classes: Sequence[int] | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    stratify: bool = True,
    name: str | None = None,
) -> Dataset:
    """Images in ImageNet-style class folders (``root/<class>/<image>``) via ``ImageFolder``.

    Images are converted to RGB, optionally resized (``size``, e.g. ``(224, 224)``), and divided by
    255. Class labels are the sorted folder names. With ``test_root`` (same class folders) that is
    the test split; otherwise the images are split by :func:`rab.data.split.seeded_split`. All
    images are held in memory as ``float32``.
    """
    root = Path(root)
    train_ds, X = _read_folder(root, size)
    y = np.asarray(train_ds.targets)
    meta: dict[str, Any] = {"source": {"format": "image_folder", "root": str(root)}}
    if test_root is None:
        train_idx, test_idx, meta["split"] = seeded_split(
            y, test_fraction=test_fraction, seed=split_seed, stratify=stratify
        )
        arrays = (X[train_idx], y[train_idx], X[test_idx], y[test_idx])
    else:
        test_ds, X_test = _read_folder(Path(test_root), size)
        if test_ds.classes != train_ds.classes:
            raise ValueError(
                f"class folders differ: {root} has {train_ds.classes}, "
                f"{test_root} has {test_ds.classes}"
            )
        meta["source"]["test_root"] = str(test_root)
        arrays = (X, y, X_test, np.asarray(test_ds.targets))
    return from_arrays(
        *arrays,
        name=name or root.name,
        class_names=train_ds.classes,
        classes=classes,
        preprocessing=PIXELS,
        layout="channels_first",
        meta=meta,
    )
