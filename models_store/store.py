"""Content-addressed artefact store: objects named by their SHA-256, never overwritten, the hash
verified on every read. Metadata (kind, owner, provenance) lives in SQL, not in object names.

``ObjectStore`` is the contract; ``LocalStore`` keeps the objects in a directory (the embedded
default) and ``models_store.s3.S3Store`` in an S3-compatible bucket. Callers never learn which
one they hold: they write through ``pending``/``put_*`` and read through ``open``/``get_bytes``.

New objects are first written to a local staging file (hashed and size-limited while written)
and published under their hash only once complete, so no reader ever sees a partial object.
A staging file is locked (``flock``) by its writer for as long as it exists; opening a store
sweeps the staging area of unlocked files, i.e. of the partial uploads of killed processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")
STAGING_PREFIX = "upload-"


class StoreError(Exception):
    """Base class of store errors."""


class ObjectMissingError(StoreError):
    """No object with that hash is in the store."""


class CorruptObjectError(StoreError):
    """An object's bytes no longer hash to its name."""


class TooLargeError(StoreError):
    """A stream exceeded the size limit it was written under."""


class StoreUnavailableError(StoreError):
    """The storage service could not be reached (after retries); nothing was published."""


def check_name(sha256: str) -> str:
    """``sha256`` if it is a lowercase hex SHA-256 (object names never hold anything else)."""
    if len(sha256) != 64 or not _HEX.issuperset(sha256):
        raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
    return sha256


def verify(handle: BinaryIO, sha256: str) -> BinaryIO:
    """Hash ``handle`` from its start; rewound and returned if it hashes to ``sha256``, else
    closed and ``CorruptObjectError``."""
    digest = hashlib.sha256()
    handle.seek(0)
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
    if digest.hexdigest() != sha256:
        handle.close()
        raise CorruptObjectError(f"object {sha256} is corrupt (hashes to {digest.hexdigest()})")
    handle.seek(0)
    return handle


def locked_temp(directory: Path, prefix: str = STAGING_PREFIX) -> tuple[BinaryIO, Path]:
    """A new file in ``directory`` opened for writing, exclusively ``flock``ed by this process
    (the lock ends when the file is closed, or when the process dies)."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=prefix)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return os.fdopen(fd, "w+b"), Path(name)


def sweep_stale(directory: Path) -> list[Path]:
    """Delete the files of ``directory`` that no live writer holds locked (left by killed
    processes); returns them. A file being written by another process is kept."""
    swept = []
    for path in directory.iterdir():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, or a link
            continue
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its writer is alive
        else:
            path.unlink(missing_ok=True)
            swept.append(path)
        finally:
            os.close(fd)
    return swept


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as the backend lists it (for garbage collection)."""

    sha256: str
    size: int
    modified: datetime


class PendingObject:
    """A file being written into the store: hashed and size-limited on the fly.

    It stays a locked local staging file (readable at ``path``, e.g. to parse an upload) until
    ``commit()`` publishes it under its SHA-256 or ``discard()`` (or leaving the ``with`` block
    without committing) deletes it.
    """

    def __init__(self, store: ObjectStore, max_bytes: int | None = None) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._file, self.path = locked_temp(store.staging_dir)
        self.size = 0
        self._hash = hashlib.sha256()
        self._done = False

    def write(self, data: bytes) -> None:
        """Append ``data``; raises ``TooLargeError`` once the total passes the limit."""
        self.size += len(data)
        if self._max_bytes is not None and self.size > self._max_bytes:
            raise TooLargeError(f"more than {self._max_bytes} bytes")
        self._hash.update(data)
        self._file.write(data)

    @property
    def sha256(self) -> str:
        """Hex digest of the bytes written so far."""
        return self._hash.hexdigest()

    def close(self) -> None:
        """Flush and fsync the staging file; it stays readable at ``path`` (and locked)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())

    def commit(self) -> str:
        """Publish the file under its hash (a no-op if that object exists); returns the hash."""
        self.close()
        digest = self.sha256
        moved = False
        try:
            moved = self._store.publish(self.path, digest)
        finally:
            self._release(unlink=not moved)
        return digest

    def discard(self) -> None:
        """Delete the staging file and release its lock (nothing is published)."""
        self._release(unlink=True)

    def _release(self, unlink: bool) -> None:
        if not self._done:
            self._done = True
            if unlink:
                self.path.unlink(missing_ok=True)
            self._file.close()

    def __enter__(self) -> PendingObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


class ObjectStore(ABC):
    """The store contract: immutable objects named by SHA-256, verified on every read.

    ``staging_dir`` is a local directory for objects being written (swept at start).
    """

    def __init__(self, staging_dir: Path) -> None:
        self.staging_dir = staging_dir
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.staging_dir)

    def pending(self, max_bytes: int | None = None) -> PendingObject:
        """Start writing a new object (see ``PendingObject``)."""
        return PendingObject(self, max_bytes)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its SHA-256 (a no-op if already stored)."""
        return self.put_stream([data])

    def put_stream(self, chunks: Iterable[bytes], max_bytes: int | None = None) -> str:
        """Store the concatenation of ``chunks``; returns its SHA-256."""
        with self.pending(max_bytes) as pending:
            for chunk in chunks:
                pending.write(chunk)
            return pending.commit()

    def get_bytes(self, sha256: str) -> bytes:
        """The object's bytes, verified against its name."""
        with self.open(sha256) as handle:
            return handle.read()

    @abstractmethod
    def publish(self, path: Path, sha256: str) -> bool:
        """Make the complete staging file ``path`` (whose bytes hash to ``sha256``) the object
        ``sha256``, atomically; an existing object is kept, never overwritten. True if ``path``
        was moved away (consumed), False if it is left for the caller to delete."""

    @abstractmethod
    def exists(self, sha256: str) -> bool:
        """True if the object is stored."""

    @abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """A local, seekable binary file of the object, already verified against its name
        (``ObjectMissingError`` / ``CorruptObjectError`` otherwise); close it after use."""

    @abstractmethod
    def list_objects(self) -> Iterator[ObjectInfo]:
        """Every stored object, with its size and last modification time."""

    @abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove the object (garbage collection only; a missing object is no error)."""


class LocalStore(ObjectStore):
    """A directory of immutable objects ``objects/ab/cdef...``: a complete, fsynced staging
    file in ``tmp/`` (same file system) is published by a hard link, which is atomic and fails
    rather than replace an existing object."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.objects_dir = self.root / "objects"
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(self.root / "tmp")

    def path_of(self, sha256: str) -> Path:
        """Where the object named ``sha256`` lives (it may not exist)."""
        check_name(sha256)
        return self.objects_dir / sha256[:2] / sha256[2:]

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def publish(self, path: Path, sha256: str) -> bool:
        """Link the staging file in under its name and sync the directory. An object that
        exists already is refreshed instead (its time stamp written and synced): the same
        kind of metadata write and sync as a new link, so that the time a write takes does not
        tell its sender that someone stored the same bytes before (a dataset or certify
        inputs of another key)."""
        target = self.path_of(sha256)
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(path, target)  # fails if the object exists: it is never replaced
            synced = target.parent
        except FileExistsError:
            os.utime(target)
            synced = target
        fd = os.open(synced, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return False  # the staging name is the caller's to delete

    def open(self, sha256: str) -> BinaryIO:
        try:
            handle = self.path_of(sha256).open("rb")
        except FileNotFoundError:
            raise ObjectMissingError(f"object {sha256} is not in the store") from None
        return verify(handle, sha256)

    def list_objects(self) -> Iterator[ObjectInfo]:
        for path in self.objects_dir.glob("??/*"):
            status = path.stat()
            yield ObjectInfo(
                path.parent.name + path.name, status.st_size,
                datetime.fromtimestamp(status.st_mtime, UTC),
            )

    def delete(self, sha256: str) -> None:
        self.path_of(sha256).unlink(missing_ok=True)
