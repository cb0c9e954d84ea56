"""A bounded local read-through cache of a remote store's objects, keyed by SHA-256.

Each machine (API, every worker) keeps the objects it read or wrote under ``objects/ab/cdef``
of its own cache directory, so a hot model or dataset crosses the network once per machine.
A cached copy is verified against its name on every read like any object (a corrupt copy is
dropped and fetched again); a fetched copy is verified before it enters the cache, so a
partial or corrupt download is never read. The cache is least-recently-used by bytes: every
hit refreshes the copy's modification time, and inserting evicts the oldest copies until the
total fits ``max_bytes`` (a file evicted while another process reads it stays readable
through the open handle). Processes of one machine may share a cache directory: each counts
its own insertions and rescans the directory (the true total) once its count passes the bound
or every ``RESCAN_EVERY`` insertions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from models_store.store import CorruptObjectError, check_name, locked_temp, verify

Download = Callable[[BinaryIO], None]
RESCAN_EVERY = 64


class ReadCache:
    """Verified copies of remote objects in ``root``, at most ``max_bytes`` in total."""

    def __init__(self, root: Path | str, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._total: int | None = None  # bytes cached as of the last scan, plus insertions
        self._since_scan = 0

    def path_of(self, sha256: str) -> Path:
        """Where the cached copy of ``sha256`` lives (it may not exist)."""
        check_name(sha256)
        return self.objects_dir / sha256[:2] / sha256[2:]

    def open(self, sha256: str, download: Download) -> BinaryIO:
        """The verified object: the cached copy, or else ``download``ed into a locked staging
        file, verified, then added to the cache."""
        path = self.path_of(sha256)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            pass
        else:
            try:
                verified = verify(handle, sha256)
            except CorruptObjectError:
                path.unlink(missing_ok=True)  # a damaged local copy: fetch it again
            else:
                os.utime(path)
                return verified
        target, staging = locked_temp(self.tmp_dir, prefix="fetch-")
        try:
            download(target)
            target.flush()
            verify(target, sha256)  # closes ``target`` if the download is corrupt
            self.add(staging, sha256)
            return target  # still the fetched bytes, whether or not the copy gets evicted
        except BaseException:
            target.close()
            raise
        finally:
            staging.unlink(missing_ok=True)

    def add(self, path: Path, sha256: str) -> None:
        """Keep the complete file ``path`` (whose bytes hash to ``sha256``) as the cached copy,
        by a hard link (``path`` itself is left for the caller), then evict to the bound."""
        target = self.path_of(sha256)
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(path, target)
        except FileExistsError:
            os.utime(target)
            return
        self._since_scan += 1
        if self._total is not None:
            self._total += target.stat().st_size
        if (self._total is None or self._total > self.max_bytes
                or self._since_scan >= RESCAN_EVERY):
            self.evict(keep=target)

    def discard(self, sha256: str) -> None:
        """Drop the cached copy of ``sha256`` (the object was deleted)."""
        self.path_of(sha256).unlink(missing_ok=True)

    def evict(self, keep: Path | None = None) -> None:
        """Delete least recently used copies until the cache holds at most ``max_bytes``
        (``keep``, the copy just added, goes last)."""
        entries = []
        for path in self.objects_dir.glob("??/*"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # evicted by another process meanwhile
            entries.append((path == keep, stat.st_mtime, stat.st_size, path))
        total = sum(size for _, _, size, _ in entries)
        for _, _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
        self._total, self._since_scan = total, 0
