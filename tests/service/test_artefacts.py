"""Object rows under concurrency: two transactions storing the same bytes both succeed."""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

from app.artefacts import put_object
from app.db import Database
from app.orm import StoredObject
from app.settings import Settings
from models_store import ObjectStore


def test_same_object_stored_by_two_transactions_at_once(
    migrated_db: tuple[Settings, Database],
) -> None:
    # The first transaction inserts the row and holds it uncommitted while the second one
    # looks (finds nothing yet) and inserts too; the second must not fail when the first commits.
    settings, db = migrated_db
    store = ObjectStore(settings.data_dir / "objects")
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
