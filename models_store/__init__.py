"""Content-addressed artefact store (datasets, models, result arrays) keyed by SHA-256.

``open_store`` is the one place that picks the backend: a local directory (the embedded
default) or an S3-compatible bucket, read through a bounded local cache.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from models_store.cache import ReadCache
from models_store.store import (
    CorruptObjectError,
    LocalStore,
    ObjectInfo,
    ObjectMissingError,
    ObjectStore,
    PendingObject,
    StoreError,
    StoreUnavailableError,
    TooLargeError,
)


def open_store(location: str | Path, *, cache_dir: Path | str, cache_bytes: int) -> ObjectStore:
    """The store at ``location``: ``s3://bucket/prefix`` (endpoint and credentials from the
    standard AWS variables, objects read through a ``ReadCache`` of ``cache_bytes`` bytes in
    ``cache_dir``), else a local directory (a path or ``file://`` URL)."""
    text = str(location)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"store URL {text!r} names no bucket (s3://bucket/prefix)")
        from models_store.s3 import S3Store  # boto3 only where it is used

        return S3Store(parsed.netloc, parsed.path, ReadCache(cache_dir, cache_bytes))
    if parsed.scheme == "file":
        return LocalStore(parsed.path)
    if parsed.scheme:
        raise ValueError(f"unsupported store URL {text!r}: use s3://bucket/prefix or a path")
    return LocalStore(text)


__all__ = [
    "CorruptObjectError",
    "LocalStore",
    "ObjectInfo",
    "ObjectMissingError",
    "ObjectStore",
    "PendingObject",
    "ReadCache",
    "StoreError",
    "StoreUnavailableError",
    "TooLargeError",
    "open_store",
]
