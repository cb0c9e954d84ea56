"""Datasets and arrays as objects of the artefact store, with their metadata rows in SQL.

A dataset is stored in canonical form (the arrays of a validated ``rab.data.Dataset`` in an npz
without pickles); reading it back rebuilds the ``Dataset`` and checks its content hash against
the one recorded in SQL, so a dataset row can never silently point at other data.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.orm import Dataset as DatasetRow
from app.orm import StoredObject
from models_store import CorruptObjectError, ObjectStore
from rab.data import Dataset

_ARRAYS = ("X_train", "y_train", "X_test", "y_test")


def record_object(session: Session, data: bytes, kind: str) -> str:
    """Insert the metadata row of the object ``data`` (once); returns its SHA-256.

    Concurrent requests may record the same bytes (the same inputs certified twice at once):
    the row is inserted in a savepoint, and the loser of that race keeps the winner's row."""
    digest = hashlib.sha256(data).hexdigest()
    if session.get(StoredObject, digest) is None:
        try:
            with session.begin_nested():
                session.add(StoredObject(sha256=digest, kind=kind, size=len(data)))
        except IntegrityError:
            pass  # a concurrent transaction recorded the same object first
    return digest


def put_object(session: Session, store: ObjectStore, data: bytes, kind: str) -> str:
    """Record ``data``'s row, then store its bytes (so a refused row leaves no object behind);
    returns its SHA-256."""
    digest = record_object(session, data, kind)
    store.put_bytes(data)
    return digest


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays as an (uncompressed) npz archive."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def load_arrays(store: ObjectStore, digest: str) -> dict[str, np.ndarray]:
    """The arrays of a stored npz object (hash verified, pickles refused)."""
    with np.load(store.verified_path(digest), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def dataset_bytes(dataset: Dataset) -> bytes:
    """The canonical npz of ``dataset``: its four arrays and its class names."""
    arrays: dict[str, Any] = {key: getattr(dataset, key) for key in _ARRAYS}
    arrays["class_names"] = np.array(dataset.class_names, dtype=str)
    return npz_bytes(arrays)


def save_dataset(session: Session, store: ObjectStore, dataset: Dataset) -> str:
    """Store ``dataset`` canonically; returns the object's SHA-256."""
    return put_object(session, store, dataset_bytes(dataset), "dataset")


def load_dataset(
    store: ObjectStore, object_sha256: str, row: DatasetRow, *, expected_sha256: str | None = None
) -> Dataset:
    """Rebuild the ``Dataset`` of ``row`` from the object ``object_sha256``.

    ``expected_sha256`` (default: the row's content hash) must equal the rebuilt dataset's
    ``sha256``; a mismatch raises ``CorruptObjectError``.
    """
    arrays = load_arrays(store, object_sha256)
    dataset = Dataset(
        X_train=arrays["X_train"],
        y_train=arrays["y_train"],
        X_test=arrays["X_test"],
        y_test=arrays["y_test"],
        input_shape=tuple(row.input_shape),
        feature_range=None if row.feature_range is None else tuple(row.feature_range),
        class_names=tuple(str(c) for c in arrays["class_names"]),
        name=row.name,
    )
    expected = expected_sha256 or row.content_sha256
    if dataset.sha256 != expected:
        raise CorruptObjectError(
            f"dataset object {object_sha256} rebuilds to content {dataset.sha256}, "
            f"expected {expected}"
        )
    return dataset
