"""Content-addressed artefact store: objects named by their SHA-256, written atomically.

Writes go to a temporary file in the same file system (hashed while written), are fsynced and
renamed into place; an existing object is never overwritten. Reads verify the hash. Metadata
(kind, owner, provenance) lives in SQL, not in file names.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


class StoreError(Exception):
    """Base class of store errors."""


class ObjectMissingError(StoreError):
    """No object with that hash is in the store."""


class CorruptObjectError(StoreError):
    """An object's bytes no longer hash to its name."""


class TooLargeError(StoreError):
    """A stream exceeded the size limit it was written under."""


class PendingObject:
    """A file being written into the store: hashed and size-limited on the fly.

    ``commit()`` fsyncs it and renames it into place under its SHA-256; ``discard()`` (or leaving
    the ``with`` block without committing) deletes it.
    """

    def __init__(self, store: ObjectStore, max_bytes: int | None = None) -> None:
        self._store = store
        self._max_bytes = max_bytes
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.size = 0
        self._hash = hashlib.sha256()

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
        """Flush and fsync the temporary file (it stays readable at ``path``)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def commit(self) -> str:
        """Move the file into the store under its hash; returns the hash."""
        self.close()
        digest = self.sha256
        self._store.adopt(self.path, digest)
        return digest

    def discard(self) -> None:
        """Delete the temporary file."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> PendingObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


class ObjectStore:
    """A directory of immutable objects ``objects/ab/cdef...`` named by SHA-256."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.objects_dir = self.root / "objects"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.objects_dir.mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        """Where the object named ``sha256`` lives (it may not exist)."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
        return self.objects_dir / sha256[:2] / sha256[2:]

    def exists(self, sha256: str) -> bool:
        """True if the object is stored."""
        return self.path_of(sha256).is_file()

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

    def adopt(self, path: Path, sha256: str) -> None:
        """Rename a complete, fsynced file ``path`` (in ``tmp_dir``) into place as ``sha256``.

        If the object already exists the file is deleted instead: objects are never overwritten.
        """
        target = self.path_of(sha256)
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            path.unlink(missing_ok=True)
            return
        os.replace(path, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def verified_path(self, sha256: str) -> Path:
        """Path of the object after checking that its bytes hash to its name."""
        path = self.path_of(sha256)
        if not path.is_file():
            raise ObjectMissingError(f"object {sha256} is not in the store at {self.root}")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise CorruptObjectError(f"object {sha256} is corrupt (hashes to {digest.hexdigest()})")
        return path

    def get_bytes(self, sha256: str) -> bytes:
        """The object's bytes, verified against its name."""
        path = self.path_of(sha256)
        if not path.is_file():
            raise ObjectMissingError(f"object {sha256} is not in the store at {self.root}")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise CorruptObjectError(f"object {sha256} is corrupt (hashes to {actual})")
        return data
