"""Object rows and bytes together, on both store backends and both databases: two
transactions storing the same bytes both succeed; garbage collection deletes exactly the
objects no row references, and never one that a concurrent writer is storing again."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.artefacts import collect_garbage, put_object
from app.auth import create_key
from app.db import Database
from app.orm import Dataset, Job, StoredObject
from app.settings import Settings
from models_store import LocalStore, ObjectMissingError, ObjectStore

from .conftest import REPO_ROOT, service_cli

DB = tuple[Settings, Database]


def test_same_object_stored_by_two_transactions_at_once(
    migrated_db: DB, store_factory: Callable[[], ObjectStore]
) -> None:
    # The first transaction inserts the row and holds it uncommitted while the second one
    # looks (finds nothing yet) and inserts too; the second must not fail when the first commits.
    _, db = migrated_db
    store = store_factory()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with db.session() as session:
                put_object(session, store, b"the same inputs", "inputs")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    with db.session() as first:
        digest = put_object(first, store, b"the same inputs", "inputs")
        first.flush()
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)  # the second transaction is now waiting on the first's row
    thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
    with db.session() as session:
        count = session.scalar(
            select(func.count()).select_from(StoredObject).where(StoredObject.sha256 == digest)
        )
    assert count == 1
    assert store.get_bytes(digest) == b"the same inputs"


def _rows(db: Database, store: ObjectStore) -> dict[str, str]:
    """Objects named by each kind of referencing row, one with a row but no reference and one
    (an orphan) with no row at all."""
    with db.session() as session:
        key, _ = create_key(session, "gc")
        names = {kind: put_object(session, store, kind.encode(), kind)
                 for kind in ("dataset", "inputs", "votes", "unreferenced")}
        session.add(Dataset(
            owner_id=key.id, name="d", source="upload", content_sha256="c" * 64,
            object_sha256=names["dataset"], input_shape=[1], class_names=["a"],
            train_counts=[1], test_counts=[1], feature_range=None, provenance={},
        ))
        session.add(Job(
            owner_id=key.id, kind="certify", method="knn", params={},
            inputs_sha256=names["inputs"], max_attempts=1, request_sha256="r" * 64,
            summary={"votes_sha256": {"clean": names["votes"]}},
        ))
    names["orphan"] = store.put_bytes(b"a put whose transaction rolled back")
    return names


def test_gc_deletes_only_unreferenced_objects_after_a_dry_run(
    migrated_db: DB, store_factory: Callable[[], ObjectStore]
) -> None:
    _, db = migrated_db
    store = store_factory()
    names = _rows(db, store)
    garbage = {names["unreferenced"], names["orphan"]}
    assert collect_garbage(db, store, timedelta(hours=1), delete=True) == []  # all too recent
    assert set(collect_garbage(db, store, timedelta(0))) == garbage  # the dry run
    assert {o.sha256 for o in store.list_objects()} == set(names.values())  # nothing deleted
    assert set(collect_garbage(db, store, timedelta(0), delete=True)) == garbage
    assert {o.sha256 for o in store.list_objects()} == set(names.values()) - garbage
    with db.session() as session:
        rows = set(session.scalars(select(StoredObject.sha256)))
    assert rows == set(names.values()) - garbage
    with pytest.raises(ObjectMissingError):
        store.get_bytes(names["unreferenced"])
    assert collect_garbage(db, store, timedelta(0), delete=True) == []


def test_gc_keeps_an_object_a_concurrent_writer_stores_again(
    migrated_db: DB, store_factory: Callable[[], ObjectStore]
) -> None:
    # An old unreferenced object is being stored again by a job whose transaction is still
    # open when the collection looks at it: the collection must wait for the writer's row
    # lock and then see the object as freshly written.
    _, db = migrated_db
    store = store_factory()
    with db.session() as session:
        digest = put_object(session, store, b"member state", "model")
    time.sleep(1.5)
    found: list[list[str]] = []
    with db.session() as writer:
        assert put_object(writer, store, b"member state", "model") == digest
        writer.flush()
        collector = threading.Thread(
            target=lambda: found.append(
                collect_garbage(db, store, timedelta(seconds=1), delete=True))
        )
        collector.start()
        time.sleep(1.0)  # the collection is now waiting on the writer's row
    collector.join(timeout=60)
    assert found == [[]]
    assert store.get_bytes(digest) == b"member state"


def test_store_gc_command_dry_run_then_delete(tmp_path: Path) -> None:
    # Embedded mode: SQLite and the local store under RAB_DATA_DIR.
    env = {**os.environ, "RAB_DATA_DIR": str(tmp_path)}
    orphan = LocalStore(tmp_path / "store").put_bytes(b"no row names me")

    def gc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            service_cli("store", "gc", "--grace-hours", "0", *args), env=env, cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=120, check=True,
        )

    dry = gc()
    assert dry.stdout.split() == [orphan] and "dry run" in dry.stderr
    assert LocalStore(tmp_path / "store").exists(orphan)
    assert gc("--delete").stdout.split() == [orphan]
    assert not LocalStore(tmp_path / "store").exists(orphan)
