"""models_store: content addressing, atomic writes, no overwrite, verification on read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from models_store import CorruptObjectError, ObjectMissingError, ObjectStore, TooLargeError


def test_put_names_object_by_sha256_and_reads_back(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    data = np.random.default_rng(0).bytes(100_000)
    digest = store.put_stream([data[:1000], data[1000:]])
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get_bytes(digest) == data
    assert store.verified_path(digest).read_bytes() == data
    assert list(store.tmp_dir.iterdir()) == []


def test_same_content_is_stored_once_and_never_overwritten(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    digest = store.put_bytes(b"model bytes")
    path = store.path_of(digest)
    inode = path.stat().st_ino
    assert store.put_bytes(b"model bytes") == digest
    assert path.stat().st_ino == inode  # the first file was kept, not replaced
    assert sum(1 for p in store.objects_dir.rglob("*") if p.is_file()) == 1
    assert list(store.tmp_dir.iterdir()) == []


def test_corruption_is_detected_on_read(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    digest = store.put_bytes(b"votes")
    path = store.path_of(digest)
    path.chmod(0o644)
    path.write_bytes(b"vote!")
    with pytest.raises(CorruptObjectError, match=digest):
        store.get_bytes(digest)
    with pytest.raises(CorruptObjectError):
        store.verified_path(digest)


def test_missing_and_malformed_names(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    with pytest.raises(ObjectMissingError):
        store.get_bytes("0" * 64)
    with pytest.raises(ValueError, match="SHA-256"):
        store.path_of("../../etc/passwd")


def test_size_limit_discards_the_partial_file(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    with pytest.raises(TooLargeError):
        store.put_stream([b"x" * 600, b"y" * 600], max_bytes=1000)
    assert list(store.tmp_dir.iterdir()) == []
    assert not any(p.is_file() for p in store.objects_dir.rglob("*"))
