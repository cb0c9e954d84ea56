"""Datasets and arrays as objects of the artefact store, with their metadata rows in SQL.

A dataset is stored in canonical form (the arrays of a validated ``rab.data.Dataset`` in an npz
without pickles); reading it back rebuilds the ``Dataset`` and checks its content hash against
the one recorded in SQL, so a dataset row can never silently point at other data.

Objects no row references any more are collected by ``collect_garbage`` (``rab store gc``).
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import numpy as np
from sqlalchemy import Text, cast, delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import Database
from app.orm import Dataset as DatasetRow
from app.orm import Job, Model, ModelMember, StoredObject, utcnow
from models_store import CorruptObjectError, ObjectStore
from rab.data import Dataset

_ARRAYS = ("X_train", "y_train", "X_test", "y_test")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _claim_object(session: Session, digest: str, kind: str, size: int) -> None:
    """Insert the object's row, or refresh its ``created_at`` (the object is written again):
    an upsert that holds the row locked until the writer's transaction ends (see
    ``collect_garbage``)."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(StoredObject).values(sha256=digest, kind=kind, size=size,
                                            created_at=utcnow())
    session.execute(statement.on_conflict_do_update(
        index_elements=[StoredObject.sha256],
        set_={"created_at": statement.excluded.created_at},
    ))


def record_object(session: Session, data: bytes, kind: str, digest: str | None = None) -> str:
    """Record (or refresh) the metadata row of the object ``data``; returns its SHA-256
    (``digest``, when the caller has computed it already). Write the bytes only after the
    rows that refer to them are in, so that a refused row leaves no object behind."""
    digest = digest or hashlib.sha256(data).hexdigest()
    _claim_object(session, digest, kind, len(data))
    return digest


def put_object(session: Session, store: ObjectStore, data: bytes, kind: str,
               digest: str | None = None) -> str:
    """Record the metadata row of ``data`` (first) and store its bytes; returns its SHA-256
    (``digest`` saves hashing them again; the store's own hash of what it wrote must match).

    Concurrent requests may store the same bytes (the same inputs certified twice at once):
    the second upsert waits for the first transaction and then refreshes the row."""
    digest = record_object(session, data, kind, digest)
    stored = store.put_bytes(data)
    if stored != digest:
        raise CorruptObjectError(f"the store named {len(data)} bytes {stored}, not {digest}")
    return digest


def _referenced(session: Session, sha256: str) -> bool:
    """True if a row names the object: a dataset, a model's training set, an ensemble member,
    a certify job's inputs, or a job summary (its ``votes_sha256``)."""
    columns = (DatasetRow.object_sha256, Model.train_object_sha256, ModelMember.state_sha256,
               Job.inputs_sha256)
    return any(
        session.scalar(select(column).where(column == sha256).limit(1)) is not None
        for column in columns
    ) or session.scalar(
        select(Job.id).where(cast(Job.summary, Text).contains(sha256)).limit(1)
    ) is not None


def _written_before(session: Session, sha256: str, cutoff: datetime) -> bool:
    """True if the object's row was last written before ``cutoff`` (or it has none)."""
    written = session.scalar(select(StoredObject.created_at).where(StoredObject.sha256 == sha256))
    return written is None or written < cutoff


def _collect(session: Session, store: ObjectStore, sha256: str, cutoff: datetime) -> bool:
    """Delete the object ``sha256`` and its row if, with its row locked, it is still old and
    unreferenced; True if deleted."""
    locked = session.execute(
        update(StoredObject).where(StoredObject.sha256 == sha256)
        .values(sha256=StoredObject.sha256)
    )
    if locked.rowcount == 0:  # type: ignore[attr-defined]  # an orphan: lock a row of our own
        try:
            with session.begin_nested():
                session.add(StoredObject(sha256=sha256, kind="orphan", size=0, created_at=_EPOCH))
        except IntegrityError:
            return False  # a writer's row appeared meanwhile: the object is in use
    if not _written_before(session, sha256, cutoff) or _referenced(session, sha256):
        return False
    try:  # a foreign key still naming the row fails here, before any bytes go
        with session.begin_nested():
            session.execute(delete(StoredObject).where(StoredObject.sha256 == sha256))
    except IntegrityError:
        return False
    store.delete(sha256)
    return True


def collect_garbage(
    db: Database, store: ObjectStore, grace: timedelta, delete: bool = False
) -> list[str]:
    """The objects no row references (deleted with their ``stored_objects`` rows if
    ``delete``, else only listed: the dry run).

    The rule, safe against concurrent writers: an object is collected only if (1) the store
    last modified it more than ``grace`` ago, (2) its ``stored_objects`` row (if any) was last
    written more than ``grace`` ago, and (3) no row references it (``_referenced``), where (2)
    and (3) are checked again in one transaction that holds the object's row locked (an
    orphan without a row gets a placeholder row inserted first) and that deletes the bytes
    before it commits. A writer (``put_object``) upserts the same row before it stores the
    bytes, so it either waits for the collection (then stores the bytes afresh) or the
    collection waits for it and sees the refreshed row. Rows that reference an object are
    committed by the jobs within moments of the object's row (an ensemble member, a
    dataset, a model's training set) or in the same transaction (a certify job's inputs);
    ``grace`` must exceed the longest such gap (the vote matrices of a job are referenced by
    its summary once its certificates are stored).
    """
    cutoff = utcnow() - grace
    with db.session() as session:
        candidates = [
            info.sha256 for info in store.list_objects()
            if info.modified < cutoff and not _referenced(session, info.sha256)
            and _written_before(session, info.sha256, cutoff)
        ]
    if not delete:
        return candidates
    collected = []
    for sha256 in candidates:
        with db.session() as session:
            if _collect(session, store, sha256, cutoff):
                collected.append(sha256)
    return collected


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays as an (uncompressed) npz archive."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def load_arrays(store: ObjectStore, digest: str) -> dict[str, np.ndarray]:
    """The arrays of a stored npz object (hash verified, pickles refused)."""
    with store.open(digest) as handle:
        return _npz_arrays(handle)


def _npz_arrays(handle: BinaryIO) -> dict[str, np.ndarray]:
    with np.load(handle, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def arrays_of(data: bytes, digest: str) -> dict[str, np.ndarray]:
    """The arrays of npz bytes held outside the store (a certify job's inline inputs), as
    :func:`load_arrays` reads an object: ``CorruptObjectError`` unless they hash to
    ``digest``, pickles refused."""
    if hashlib.sha256(data).hexdigest() != digest:
        raise CorruptObjectError(f"{len(data)} bytes do not hash to {digest}")
    return arrays_in(data)


def arrays_in(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of npz bytes whose hash their reader checks otherwise (a certify message's
    inputs, against their job's row: ``workers.successes``), pickles refused."""
    return _npz_arrays(io.BytesIO(data))


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
