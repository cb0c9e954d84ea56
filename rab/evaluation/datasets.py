"""Naming a data set for an evaluation: a file path or a built-in name, classes, a subset.

Built-in names (files are looked up in the shared data directory: ``RAB_SHARED_DATA`` or
``<repo>/../shared/data``):

========================  ==========================================================
``digits``                scikit-learn's 8x8 digits, pixels / 16 (offline)
``breast_cancer``         scikit-learn's breast cancer table, raw features (offline)
``spambase``              UCI ``spambase.data``; ``variant`` selects the features
``mnist01``               ``mnist_01.npz``: MNIST 0 vs 1, classes (0, 1): source 1 -> target 0
``cifar``                 ``cifar10_airplane_bird.npz``, classes (bird, airplane): target bird
``mnist``                 all of MNIST, torchvision's layout (``MNIST/raw/...``)
``cifar10``               all of CIFAR-10, torchvision's layout (``cifar-10-batches-py/...``)
========================  ==========================================================

``mnist`` and ``cifar10`` (:data:`VISION_DATASETS`) are read by :func:`rab.data.load_mnist` /
:func:`rab.data.load_cifar10` from the data directory; ``download = true`` lets torchvision fetch
them there first (internet needed). Their ``classes`` are passed to the loader, so only the kept
classes are converted to floats.

A path ending in ``.npz`` or ``.csv`` (label in the last column) loads that file;
``spambase.data`` loads as Spambase.

``split = "authors"`` (Spambase only) rebuilds the authors' split exactly as their
``spam_dataset.py`` behaves, to compare with the paper's Table 5: training set = the first 80 %
of the file's rows (3,680), test set = the FIRST 921 rows (their test ``Dataset`` sets a start
offset but ``__getitem__`` ignores it).  The UCI file lists all spam first, so that test set is
921 spam e-mails that are also training points.  It is a reproduction aid, not an evaluation
protocol: use the default seeded split for anything else.

``classes`` keeps and reorders classes (the first becomes label 0, the usual backdoor target);
``train_size`` / ``test_size`` keep a seeded random subset.

``shuffle_seed`` puts the training rows in a seeded random order (:func:`shuffle_train`), last,
after class selection and subsetting and before any poisoning.  Reproductions set it: the
smoothed K-NN breaks ties within a distance level by training index (eq. 65), so its
predictions depend on the row order, and the shared files list each class in a block (the
CIFAR file lists all airplanes, the backdoor's source class, first).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rab.data import (
    CIFAR10_CLASSES,
    MNIST_CLASSES,
    SPAMBASE_CLASSES,
    Dataset,
    from_arrays,
    load_cifar10,
    load_csv,
    load_mnist,
    load_npz,
    load_sklearn,
    load_spambase,
    select_classes,
)
from rab.data.tabular import (
    SPAMBASE_VARIANTS,
    SpambaseVariant,
    read_csv_table,
    spambase_features,
)

__all__ = [
    "BUILTIN_DATASETS",
    "VISION_DATASETS",
    "BuiltinName",
    "DatasetSpec",
    "SpambaseVariant",
    "load_dataset",
    "shared_data_dir",
    "shuffle_train",
    "subsample",
]

#: name -> (file in the shared data directory or None, default classes)
BUILTIN_DATASETS: dict[str, tuple[str | None, tuple[int | str, ...] | None]] = {
    "digits": (None, None),
    "breast_cancer": (None, None),
    "spambase": ("spambase.data", None),
    "mnist01": ("mnist_01.npz", (0, 1)),
    "cifar": ("cifar10_airplane_bird.npz", ("bird", "airplane")),
}
#: name -> (torchvision loader reading ``root``, its class names), all classes by default
VISION_DATASETS: dict[str, tuple[Callable[..., Dataset], tuple[str, ...]]] = {
    "mnist": (load_mnist, MNIST_CLASSES),
    "cifar10": (load_cifar10, CIFAR10_CLASSES),
}
#: The names a built-in data set may be asked for by (:data:`BUILTIN_DATASETS` and
#: :data:`VISION_DATASETS`).
BuiltinName = Literal["digits", "breast_cancer", "spambase", "mnist01", "cifar", "mnist", "cifar10"]



def shared_data_dir(path: Path | str | None = None) -> Path:
    """The directory of the built-in data files: ``path`` when given (the service passes its
    ``RAB_SHARED_DATA`` setting), else the ``RAB_SHARED_DATA`` environment variable, else
    ``../shared/data`` beside a source checkout that has one, else the user's data directory
    ``$XDG_DATA_HOME/rab-certify/data`` (``~/.local/share/rab-certify/data``), which is where an
    installed wheel looks."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("RAB_SHARED_DATA")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    beside = checkout.parent / "shared" / "data"
    if (checkout / "pyproject.toml").is_file() and beside.is_dir():
        return beside
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "rab-certify" / "data"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set comes from and which part of it is used (see the module docstring).

    ``source``: a built-in name or a file path.  ``variant``: the Spambase feature variant
    (``rab.data.load_spambase``).  ``classes``: labels or names to keep, in order.
    ``train_size`` / ``test_size``: a random subset drawn with ``subset_seed``.
    ``split_seed``: seed of the train/test split of files without one.
    ``download``: let torchvision download ``mnist`` / ``cifar10`` (only those); it says how the
    files are obtained, not which data, so :meth:`to_dict` (and a grid cell's key) leaves it out.
    ``shuffle_seed``: seed of the training-row permutation (None: file order; left out of
    :meth:`to_dict` when None, so existing cells keep their keys).
    """

    source: str
    classes: tuple[int | str, ...] | None = None
    variant: str = "uci"
    train_size: int | None = None
    test_size: int | None = None
    subset_seed: int = 0
    split_seed: int = 0
    split: str = "seeded"
    name: str | None = None
    download: bool = False
    shuffle_seed: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ValueError("a data set needs a source: a built-in name or a file path")
        if self.variant not in SPAMBASE_VARIANTS:
            raise ValueError(
                f"unknown Spambase variant {self.variant!r}; use {list(SPAMBASE_VARIANTS)}"
            )
        if self.split not in ("seeded", "authors"):
            raise ValueError(f"split must be 'seeded' or 'authors', got {self.split!r}")
        if self.split == "authors" and self.source != "spambase":
            raise ValueError("split = 'authors' reproduces the authors' Spambase loader only")
        if self.download and self.source not in VISION_DATASETS:
            raise ValueError(
                f"download applies to the built-in names {sorted(VISION_DATASETS)} only, "
                f"not {self.source!r}"
            )
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        for key in ("train_size", "test_size"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        seed = self.shuffle_seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"shuffle_seed must be a non-negative integer, got {seed!r}")
        if self.extra:
            raise ValueError(f"unknown data set keys {sorted(self.extra)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        """From a mapping of the field names; unknown keys raise ValueError."""
        known = set(cls.__dataclass_fields__) - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping of the fields that pick the data (all but ``extra``, ``download``)."""
        out = asdict(self)
        del out["extra"], out["download"]
        out["classes"] = None if self.classes is None else list(self.classes)
        if self.shuffle_seed is None:
            del out["shuffle_seed"]
        return out

    @property
    def label(self) -> str:
        return self.name or Path(self.source).stem


def subsample(dataset: Dataset, train_size: int | None, test_size: int | None,
              seed: int) -> Dataset:
    """A seeded random subset of the training and test splits (sample order kept).

    Drawn with ``np.random.default_rng(seed)``; a size above the split's size is an error.
    """
    rng = np.random.default_rng(seed)

    def pick(n: int, size: int | None, split: str) -> np.ndarray:
        if size is None:
            return np.arange(n)
        if size > n:
            raise ValueError(f"{split}_size {size} exceeds the {n} {split} points")
        return np.sort(rng.choice(n, size=size, replace=False))

    tr = pick(len(dataset.y_train), train_size, "train")
    te = pick(len(dataset.y_test), test_size, "test")
    return replace(
        dataset,
        X_train=dataset.X_train[tr], y_train=dataset.y_train[tr],
        X_test=dataset.X_test[te], y_test=dataset.y_test[te],
        meta=dataset.with_meta(subset={"train_size": train_size, "test_size": test_size,
                                       "seed": int(seed)}),
    )


def shuffle_train(dataset: Dataset, seed: int) -> Dataset:
    """The training rows in the order ``np.random.default_rng(seed).permutation(n)`` (test set
    unchanged), recorded in ``meta["train_order"]``: the seed, n and the SHA-256 of the
    permutation as little-endian int64 (row t of the result is row ``permutation[t]`` of the
    input)."""
    order = np.random.default_rng(seed).permutation(len(dataset.y_train))
    digest = hashlib.sha256(order.astype("<i8").tobytes()).hexdigest()
    return replace(
        dataset, X_train=dataset.X_train[order], y_train=dataset.y_train[order],
        meta=dataset.with_meta(train_order={"shuffle_seed": int(seed), "num_rows": len(order),
                                            "permutation_sha256": digest}),
    )


def _authors_spambase(path: Path, variant: str) -> Dataset:
    """The authors' Spambase split (module docstring): train rows [0, 0.8 n), test rows
    [0, n - 0.8 n) of the file, in file order."""
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    table, _ = read_csv_table(path, header=False)
    X, y = spambase_features(table, variant), table[:, 57]  # type: ignore[arg-type]
    n_train = int(0.8 * len(X))
    n_test = len(X) - n_train
    return from_arrays(
        X[:n_train], y[:n_train], X[:n_test], y[:n_test], name=f"spambase-{variant}-authors-split",
        class_names=SPAMBASE_CLASSES,
        meta={"source": {"format": "spambase", "file": path.name, "variant": variant},
              "split": {"method": "authors' spam_dataset.py: train = rows [0, 3680), "
                                  "test = rows [0, 921) (offset ignored)"}},
    )


def _load_file(path: Path, spec: DatasetSpec) -> Dataset:
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.name.startswith("spambase") and path.suffix == ".data":
        return load_spambase(path, variant=spec.variant, split_seed=spec.split_seed)  # type: ignore[arg-type]
    if path.suffix == ".npz":
        names = CIFAR10_CLASSES if path.name.startswith("cifar10") else None
        return load_npz(path, class_names=names, split_seed=spec.split_seed)
    if path.suffix == ".csv":
        return load_csv(path, split_seed=spec.split_seed)
    raise ValueError(f"cannot tell the format of {path}: use a .npz, .csv or spambase.data file")


def _class_indices(classes: Sequence[int | str], names: Sequence[str]) -> list[int]:
    """``classes`` as indices into ``names`` (a name is looked up, an integer kept)."""
    unknown = [c for c in classes if isinstance(c, str) and c not in names]
    if unknown:
        raise ValueError(f"unknown class names {unknown}; known: {list(names)}")
    return [names.index(c) if isinstance(c, str) else int(c) for c in classes]


def _load_vision(spec: DatasetSpec, root: Path) -> Dataset:
    """``mnist`` / ``cifar10`` from torchvision's layout under ``root``, only ``spec.classes``."""
    loader, names = VISION_DATASETS[spec.source]
    classes = None if spec.classes is None else _class_indices(spec.classes, names)
    return loader(root, download=spec.download, classes=classes)


def load_dataset(spec: DatasetSpec, data_dir: Path | None = None) -> Dataset:
    """Load the data set ``spec`` names (FileNotFoundError / ValueError with the reason;
    :class:`rab.data.vision.DownloadError` when a download of ``mnist`` / ``cifar10`` fails)."""
    root = shared_data_dir() if data_dir is None else data_dir
    classes: Sequence[int | str] | None = spec.classes
    if spec.source in VISION_DATASETS:
        dataset, classes = _load_vision(spec, root), None  # the loader kept the classes
    elif spec.source in BUILTIN_DATASETS:
        filename, default_classes = BUILTIN_DATASETS[spec.source]
        classes = default_classes if classes is None else classes
        if spec.split == "authors":
            dataset = _authors_spambase(root / str(filename), spec.variant)
        elif filename is None:
            dataset = load_sklearn(spec.source, split_seed=spec.split_seed)  # type: ignore[arg-type]
        else:
            dataset = _load_file(root / filename, spec)
    else:
        path = Path(spec.source).expanduser()
        if not path.is_absolute() and not path.exists() and (root / path).exists():
            path = root / path
        if not path.exists() and path.suffix not in (".npz", ".csv", ".data"):
            raise ValueError(
                f"unknown data set {spec.source!r}: not a file, and not one of "
                f"{sorted([*BUILTIN_DATASETS, *VISION_DATASETS])}"
            )
        dataset = _load_file(path, spec)
    if classes is not None:
        dataset = select_classes(dataset, list(classes))
    if spec.train_size is not None or spec.test_size is not None:
        dataset = subsample(dataset, spec.train_size, spec.test_size, spec.subset_seed)
    if spec.shuffle_seed is not None:
        dataset = shuffle_train(dataset, spec.shuffle_seed)
    return dataset
