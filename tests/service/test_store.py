"""models_store's contract, on both backends (a local directory; an S3 bucket of a real moto
server process): content addressing, atomic publication, no overwrite, verification on every
read, stale partial files swept at start; the S3 backend's multipart uploads and local cache."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models_store import (
    CorruptObjectError,
    LocalStore,
    ObjectMissingError,
    ObjectStore,
    TooLargeError,
    open_store,
)
from models_store.s3 import MULTIPART_THRESHOLD, S3Store

from .s3server import S3Server

Reopen = Callable[[], ObjectStore]  # the same store opened again (another process, same host)


@pytest.fixture
def backend(store_factory: Reopen) -> tuple[ObjectStore, Reopen]:
    return store_factory(), store_factory


def _corrupt(store: ObjectStore, digest: str, data: bytes, server: S3Server | None) -> None:
    """Replace the stored bytes of ``digest`` behind the store's back."""
    if isinstance(store, LocalStore):
        store.path_of(digest).write_bytes(data)
    else:
        assert isinstance(store, S3Store) and server is not None
        server.client().put_object(Bucket=store.bucket, Key=store.key_of(digest), Body=data)
        store.cache.discard(digest)  # as seen from a machine that has not read it yet


def test_put_names_object_by_sha256_and_reads_back(backend: tuple[ObjectStore, Reopen]) -> None:
    store, _ = backend
    data = np.random.default_rng(0).bytes(100_000)
    digest = store.put_stream([data[:1000], data[1000:]])
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.exists(digest)
    assert store.get_bytes(digest) == data
    with store.open(digest) as handle:
        assert handle.read() == data
    assert [(o.sha256, o.size) for o in store.list_objects()] == [(digest, len(data))]
    assert list(store.staging_dir.iterdir()) == []


def test_same_content_is_stored_once_and_never_overwritten(
    backend: tuple[ObjectStore, Reopen],
) -> None:
    store, _ = backend
    digest = store.put_bytes(b"model bytes")
    (first,) = store.list_objects()
    inode = store.path_of(digest).stat().st_ino if isinstance(store, LocalStore) else None
    assert store.put_bytes(b"model bytes") == digest
    (again,) = store.list_objects()  # the first object kept, not replaced
    assert (again.sha256, again.size) == (first.sha256, first.size)
    assert again.modified >= first.modified
    if inode is not None:
        assert store.path_of(digest).stat().st_ino == inode
    assert list(store.staging_dir.iterdir()) == []


def test_writing_an_object_again_refreshes_it_as_writing_it_anew_would(tmp_path: Path) -> None:
    """The same bytes stored again cost the same kind of work as new bytes (a staged, synced
    file, then a synced metadata write: its time stamp), so that their time does not tell a
    writer that someone stored them before; the object itself is never replaced."""
    store = LocalStore(tmp_path / "store")
    digest = store.put_bytes(b"inputs")
    path = store.path_of(digest)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert store.put_bytes(b"inputs") == digest
    assert path.stat().st_mtime > 1_000_000_000 and path.read_bytes() == b"inputs"


def test_corruption_is_detected_on_read(
    backend: tuple[ObjectStore, Reopen], request: pytest.FixtureRequest
) -> None:
    store, _ = backend
    server = None if isinstance(store, LocalStore) else request.getfixturevalue("s3_server")
    digest = store.put_bytes(b"votes")
    _corrupt(store, digest, b"vote!", server)
    with pytest.raises(CorruptObjectError, match=digest):
        store.get_bytes(digest)
    with pytest.raises(CorruptObjectError):
        store.open(digest)


def test_missing_and_malformed_names(backend: tuple[ObjectStore, Reopen]) -> None:
    store, _ = backend
    with pytest.raises(ObjectMissingError):
        store.get_bytes("0" * 64)
    assert not store.exists("0" * 64)
    with pytest.raises(ValueError, match="SHA-256"):
        store.open("../../etc/passwd")


def test_size_limit_discards_the_partial_file(backend: tuple[ObjectStore, Reopen]) -> None:
    store, _ = backend
    with pytest.raises(TooLargeError):
        store.put_stream([b"x" * 600, b"y" * 600], max_bytes=1000)
    assert list(store.staging_dir.iterdir()) == []
    assert list(store.list_objects()) == []


def test_partial_files_of_a_killed_writer_are_swept_at_start(
    backend: tuple[ObjectStore, Reopen],
) -> None:
    # A killed upload leaves its staging file behind (its lock dies with the process); a
    # writer that is still alive holds its file locked, and must keep it.
    store, reopen = backend
    (store.staging_dir / "upload-killed").write_bytes(b"half an upl")
    alive = store.pending()
    alive.write(b"still being written")
    reopen()
    assert sorted(p.name for p in store.staging_dir.iterdir()) == [alive.path.name]
    assert alive.commit() == hashlib.sha256(b"still being written").hexdigest()
    assert list(store.staging_dir.iterdir()) == []


def test_delete(backend: tuple[ObjectStore, Reopen]) -> None:
    store, _ = backend
    keep, drop = store.put_bytes(b"keep"), store.put_bytes(b"drop")
    store.delete(drop)
    store.delete(drop)  # already gone: no error
    assert [o.sha256 for o in store.list_objects()] == [keep]
    with pytest.raises(ObjectMissingError):
        store.get_bytes(drop)


def test_open_store_picks_the_backend_from_one_url(tmp_path: Path, s3_server: S3Server) -> None:
    local = open_store(tmp_path / "store", cache_dir=tmp_path / "cache", cache_bytes=1)
    assert isinstance(local, LocalStore) and local.root == tmp_path / "store"
    bucket = s3_server.new_bucket()
    os.environ.update(s3_server.env)
    try:
        remote = open_store(f"s3://{bucket}/a/b", cache_dir=tmp_path / "cache", cache_bytes=1)
    finally:
        for name in s3_server.env:
            os.environ.pop(name)
    assert isinstance(remote, S3Store) and remote.prefix == "a/b/"
    digest = remote.put_bytes(b"x")
    assert remote.key_of(digest) == f"a/b/objects/{digest[:2]}/{digest[2:]}"
    with pytest.raises(ValueError, match="unsupported"):
        open_store("ftp://host/x", cache_dir=tmp_path, cache_bytes=1)


@pytest.mark.slow
def test_s3_large_object_is_a_multipart_upload(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    writer = s3_server.store(tmp_path / "writer", bucket)
    data = np.random.default_rng(1).bytes(MULTIPART_THRESHOLD + 1_000_000)
    digest = writer.put_bytes(data)
    head = s3_server.client().head_object(Bucket=bucket, Key=writer.key_of(digest))
    assert head["ETag"].strip('"').endswith("-2")  # two parts
    reader = s3_server.store(tmp_path / "reader", bucket)  # another machine: empty cache
    assert reader.get_bytes(digest) == data


def test_s3_reads_through_a_bounded_verified_cache(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    writer = s3_server.store(tmp_path / "writer", bucket)
    blobs = [bytes([i]) * 1000 for i in range(3)]
    digests = [writer.put_bytes(b) for b in blobs]
    reader = s3_server.store(tmp_path / "reader", bucket, cache_bytes=2500)
    assert reader.get_bytes(digests[0]) == blobs[0]
    # a hit is served locally: the remote object is not needed any more
    s3_server.client().delete_object(Bucket=bucket, Key=reader.key_of(digests[0]))
    assert reader.get_bytes(digests[0]) == blobs[0]
    reader.get_bytes(digests[1])
    reader.get_bytes(digests[0])  # the most recently used
    reader.get_bytes(digests[2])  # 3000 bytes > 2500: the least recently used goes
    cached = {p.parent.name + p.name for p in reader.cache.objects_dir.glob("??/*")}
    assert cached == {digests[0], digests[2]}
    # a damaged cached copy is dropped and fetched again, verified
    reader.cache.path_of(digests[2]).write_bytes(b"\0" * 1000)
    assert reader.get_bytes(digests[2]) == blobs[2]
