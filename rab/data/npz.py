"""Loader for ``.npz`` archives in the layout of ``../shared/data``.

Arrays ``X_train, y_train, X_test, y_test`` (or ``X, y`` without an official split, which are then
split with :func:`rab.data.split.seeded_split`). Images may be channel-last ``uint8`` (as in the
shared CIFAR file) or grayscale ``(n, H, W)``; they become channel-first floats in [0, 1]. Archives
are read by :class:`NpzArchive`: numeric arrays only (never unpickled), their declared sizes checked
against a limit before anything is allocated.
"""

from __future__ import annotations

import lzma
import math
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rab.data.build import Layout, from_arrays
from rab.data.dataset import Dataset
from rab.data.preprocess import PIXELS, RAW, Preprocessing
from rab.data.split import seeded_split

__all__ = ["MAX_MEMBERS", "NUMERIC_KINDS", "NpzArchive", "load_npz"]

_SPLIT_KEYS = ("X_train", "y_train", "X_test", "y_test")


#: dtype kinds an array may have: booleans, integers and real floats (no complex, strings,
#: objects or structured records)
NUMERIC_KINDS = "biuf"
_CHUNK = 1 << 20
_READ_ERRORS = (
    zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, NotImplementedError,
    RuntimeError,
)


MAX_MEMBERS = 64  # an npz of a dataset has 2 to 5 arrays
_EOCD = b"PK\x05\x06"  # signature of the zip's end-of-central-directory record (22 bytes + comment)


def _member_count(path: Path) -> int | None:
    """The member count the zip's end record declares (None if it has none), read before
    ``zipfile`` builds one object per member of the central directory. The record is found
    as ``zipfile`` finds it: at the very end, else the last signature within a comment's reach."""
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - (22 + 0xFFFF)))
        tail = f.read()
    start = len(tail) - 22 if tail[-22:-18] == _EOCD else tail.rfind(_EOCD)
    if start < 0 or len(tail) - start < 22:
        return None
    return int.from_bytes(tail[start + 10:start + 12], "little")  # total entries


@dataclass(frozen=True)
class _Header:
    """What the ``.npy`` header of one archive member declares."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class NpzArchive:
    """An ``.npz`` archive read without trusting it: nothing is allocated before the ``.npy``
    header of each member is checked.

    Each array read must declare a numeric dtype (:data:`NUMERIC_KINDS`; pickled objects and
    complex numbers are refused) and a shape whose size (rows x features x itemsize, summed over
    the arrays of one :meth:`read`) is at most ``max_bytes``, and its zip member must hold exactly
    that many bytes after the header. A compressed member is decompressed only as far as its
    declared size, so a zip bomb costs no more memory than the limit. Every failure, a corrupt
    zip or deflate stream, an empty or truncated file, or more than :data:`MAX_MEMBERS` members
    included, raises ``ValueError``.
    """

    def __init__(self, path: str | Path, *, max_bytes: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"npz file not found: {self.path}")
        self.max_bytes = max_bytes
        members = _member_count(self.path)
        if members is not None and members > MAX_MEMBERS:
            raise ValueError(f"{self.path} declares {members} members, more than {MAX_MEMBERS}")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except _READ_ERRORS as exc:
            raise ValueError(f"{self.path} is not a readable .npz archive: {exc}") from None
        self._members = {
            info.filename.removesuffix(".npy"): info for info in self._zip.infolist()
        }

    @property
    def files(self) -> list[str]:
        """The names of the arrays (member names without ``.npy``), as ``np.load`` gives them."""
        return list(self._members)

    def _header(self, key: str) -> tuple[_Header, int]:
        """The checked header of array ``key`` and the header's length in bytes."""
        info = self._members[key]
        with self._zip.open(info) as fp:
            try:
                version = np.lib.format.read_magic(fp)
                if version == (1, 0):
                    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fp)
                elif version == (2, 0):
                    shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fp)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
            except ValueError as exc:
                raise ValueError(f"array {key!r} is not a readable .npy array: {exc}") from None
            header_len = fp.tell()
        if dtype.hasobject:
            raise ValueError(
                f"array {key!r} holds pickled Python objects; refusing to load it "
                "(allow_pickle=False). Store plain numeric arrays."
            )
        if dtype.kind not in NUMERIC_KINDS:
            raise ValueError(
                f"array {key!r} has dtype {dtype}; only booleans, integers and real floats "
                "are accepted (no complex, string or record arrays)"
            )
        if any(not isinstance(d, int) or d < 0 for d in shape):
            raise ValueError(f"array {key!r} declares an invalid shape {shape}")
        header = _Header(tuple(shape), dtype, bool(fortran_order))
        if header.nbytes != info.file_size - header_len:
            raise ValueError(
                f"array {key!r} declares shape {header.shape} of {dtype} ({header.nbytes} "
                f"bytes) but its member holds {info.file_size - header_len} bytes of data"
            )
        return header, header_len

    def _data(self, key: str, header: _Header, header_len: int) -> np.ndarray:
        """Array ``key``: one allocation of the declared size, filled from the member."""
        out = np.empty(math.prod(header.shape), dtype=header.dtype)
        view = out.data.cast("B")
        with self._zip.open(self._members[key]) as fp:
            fp.read(header_len)
            filled = 0
            while filled < len(view):
                chunk = fp.read(min(len(view) - filled, _CHUNK))
                if not chunk:
                    raise ValueError(f"array {key!r} is truncated")
                view[filled:filled + len(chunk)] = chunk
                filled += len(chunk)
        order: Literal["C", "F"] = "F" if header.fortran_order else "C"
        return out.reshape(header.shape, order=order)

    def read(self, *keys: str) -> list[np.ndarray]:
        """The arrays ``keys``, after checking every header against the limits (see the class)."""
        missing = [k for k in keys if k not in self._members]
        if missing:
            raise ValueError(f"{self.path} has no array {missing[0]!r}; it has {self.files}")
        try:
            headers = [self._header(key) for key in keys]
            total = sum(h.nbytes for h, _ in headers)
            if self.max_bytes is not None and total > self.max_bytes:
                shapes = ", ".join(
                    f"{k} {h.shape} {h.dtype}" for k, (h, _) in zip(keys, headers, strict=True)
                )
                raise ValueError(
                    f"the arrays ({shapes}) need {total} bytes decompressed, more than the "
                    f"limit of {self.max_bytes} bytes"
                )
            return [self._data(k, h, n) for k, (h, n) in zip(keys, headers, strict=True)]
        except _READ_ERRORS as exc:
            raise ValueError(f"{self.path} is not a readable .npz archive: {exc}") from None

    def close(self) -> None:
        """Close the underlying zip file."""
        self._zip.close()

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    max_bytes: int | None = None,
) -> Dataset:
    """Load an npz dataset.

    ``class_names[label]`` names the stored labels (e.g. :data:`~rab.data.classes.CIFAR10_CLASSES`
    for the shared CIFAR file, whose labels are the original indices 0 and 2). ``classes`` picks and
    orders classes (default: every training label, ascending), relabelled to ``0..C-1``.
    ``preprocessing`` defaults to :data:`~rab.data.preprocess.PIXELS` for ``uint8`` features and
    :data:`~rab.data.preprocess.RAW` otherwise. ``test_fraction``, ``split_seed`` and
    ``stratify`` only apply to archives with ``X, y`` and no official split. ``max_bytes``
    bounds the decompressed size of the arrays read (see :class:`NpzArchive`).
    """
    path = Path(path)
    meta: dict[str, Any] = {"source": {"format": "npz", "file": path.name}}
    with NpzArchive(path, max_bytes=max_bytes) as archive:
        files = set(archive.files)
        if set(_SPLIT_KEYS) <= files:
            arrays = archive.read(*_SPLIT_KEYS)
        elif {"X", "y"} <= files:
            X, y = archive.read("X", "y")
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
