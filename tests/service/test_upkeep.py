"""The tables' upkeep (``app.upkeep``): on PostgreSQL a table of dead versions is vacuumed and
analyzed, one of rows changed since its last analysis analyzed, one that needs neither left
alone; and a running API does it on its own. SQLite: nothing."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text, update

from app import upkeep as upkeep_module
from app.db import Database
from app.orm import ApiKey, Job, WorkUnit, utcnow
from app.settings import Settings
from app.upkeep import UPKEPT_TABLES, due, upkeep

from .conftest import fresh_pg_database, launch_service

ROWS = 400  # RAB_UPKEEP_ROWS of these tests
JOBS = 1000  # past ROWS + 5 % of them, however the jobs are counted


def _statistics(db: Database) -> dict[str, dict[str, Any]]:
    """pg_stat_user_tables' row of each upkept table."""
    db.engine.dispose()  # a backend's counts reach the statistics as it ends, at the latest
    with db.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT relname, n_live_tup, n_dead_tup, n_mod_since_analyze, vacuum_count, "
            "analyze_count FROM pg_stat_user_tables WHERE relname = ANY(:tables)"
        ), {"tables": list(UPKEPT_TABLES)}).mappings().all()
    return {row["relname"]: dict(row) for row in rows}


def _settled(db: Database, ready: Any, timeout: float = 30) -> dict[str, dict[str, Any]]:
    """The statistics once ``ready(statistics)`` holds (they lag the writes a little)."""
    deadline = time.monotonic() + timeout
    while not ready(found := _statistics(db)):
        assert time.monotonic() < deadline, found
        time.sleep(0.2)
    return found


def _without_autovacuum(db: Database) -> None:
    """The upkept tables left to these tests alone, whatever the server's autovacuum does."""
    with db.engine.begin() as connection:
        for table in UPKEPT_TABLES:
            connection.execute(text(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)'))


def _queued_jobs(db: Database, count: int) -> list[str]:
    """``count`` queued certify jobs of one key and model, each with its pending unit."""
    with db.session() as session:
        key = ApiKey(name="upkeep", key_hash=uuid.uuid4().hex * 2)
        session.add(key)
        session.flush()
        owner = key.id
    ids = [uuid.uuid4().hex for _ in range(count)]
    with db.session() as session:
        session.execute(insert(Job), [{
            "id": job_id, "owner_id": owner, "kind": "certify", "model_id": "m",
            "method": "knn", "params": {}, "max_attempts": 3, "request_sha256": "0" * 64,
            "progress_total": 1, "created_at": utcnow(), "state": "queued",
        } for job_id in ids])
        session.execute(insert(WorkUnit), [{
            "job_id": job_id, "name": "certify", "task": "t", "queue": "cpu", "args": {},
            "max_attempts": 3, "state": "pending",
        } for job_id in ids])
    return ids


def _finish(db: Database, ids: list[str]) -> None:
    """Every job of ``ids`` succeeded and its unit done, as a certify request's end."""
    with db.session() as session:
        session.execute(update(Job).where(Job.id.in_(ids)).values(state="succeeded"))
        session.execute(update(WorkUnit).where(WorkUnit.job_id.in_(ids)).values(state="done"))


def test_what_a_table_needs() -> None:
    assert due(live=0, dead=999, changed=999, rows=1000) is None
    assert due(live=0, dead=1000, changed=0, rows=1000) == "VACUUM (ANALYZE, SKIP_LOCKED)"
    assert due(live=0, dead=0, changed=1000, rows=1000) == "ANALYZE (SKIP_LOCKED)"
    # a large table: 5 % of its live rows on top
    assert due(live=100_000, dead=5_999, changed=5_999, rows=1000) is None
    assert due(live=100_000, dead=6_000, changed=0, rows=1000) is not None


def test_dead_versions_are_vacuumed_changed_rows_analyzed_and_nothing_else(
    migrated_db: tuple[Settings, Database],
) -> None:
    _, db = migrated_db
    if db.engine.dialect.name == "sqlite":
        _finish(db, _queued_jobs(db, JOBS))
        assert upkeep(db, ROWS) == {}
        return
    _without_autovacuum(db)
    ids = _queued_jobs(db, JOBS)
    _settled(db, lambda s: all(s[t]["n_mod_since_analyze"] >= JOBS for t in UPKEPT_TABLES))
    assert upkeep(db, 0) == {}  # turned off
    assert upkeep(db, ROWS) == dict.fromkeys(UPKEPT_TABLES, "ANALYZE (SKIP_LOCKED)")
    analyzed = _statistics(db)
    for table in UPKEPT_TABLES:
        assert analyzed[table]["analyze_count"] == 1 and analyzed[table]["vacuum_count"] == 0
        assert analyzed[table]["n_mod_since_analyze"] == 0
    assert upkeep(db, ROWS) == {}  # nothing changed since

    _finish(db, ids)
    _settled(db, lambda s: all(s[t]["n_dead_tup"] >= JOBS for t in UPKEPT_TABLES))
    assert upkeep(db, ROWS) == dict.fromkeys(UPKEPT_TABLES, "VACUUM (ANALYZE, SKIP_LOCKED)")
    vacuumed = _statistics(db)
    for table in UPKEPT_TABLES:
        assert vacuumed[table]["vacuum_count"] == 1 and vacuumed[table]["analyze_count"] == 2
        assert vacuumed[table]["n_dead_tup"] == 0
        assert vacuumed[table]["n_live_tup"] == JOBS
    assert upkeep(db, ROWS) == {}


@pytest.mark.services
def test_a_running_api_keeps_up_the_tables_on_its_own(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    with fresh_pg_database(postgres_url) as url, launch_service(
        tmp_path, url, redis_url, worker=False,
        extra_env={"RAB_UPKEEP_ROWS": str(ROWS), "RAB_UPKEEP_INTERVAL_S": "0.5"},
    ) as service:
        db = Database(Settings(database_url=url, data_dir=tmp_path))
        try:
            _without_autovacuum(db)
            _finish(db, _queued_jobs(db, JOBS))
            _settled(db, lambda s: all(s[t]["vacuum_count"] >= 1 for t in UPKEPT_TABLES))
            assert _statistics(db)["jobs"]["n_dead_tup"] == 0
        finally:
            db.engine.dispose()
        log = (service.logs / "api.log").read_text()
    assert "upkeep: VACUUM (ANALYZE, SKIP_LOCKED) jobs" in log, log[-3000:]


@pytest.mark.services
@pytest.mark.parametrize("migrated_db", ["postgresql"], indirect=True)
def test_a_table_the_role_does_not_own_is_left_alone_and_said_once(
    migrated_db: tuple[Settings, Database], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A role that does not own the tables (PostgreSQL would skip its VACUUM with a warning in
    its own log, the statistics unchanged) leaves them alone, and says so once, not at every
    interval."""
    settings, db = migrated_db
    _without_autovacuum(db)
    _finish(db, _queued_jobs(db, JOBS))
    _settled(db, lambda s: all(s[t]["n_dead_tup"] >= JOBS for t in UPKEPT_TABLES))
    role = f"rab_upkeep_{uuid.uuid4().hex[:8]}"
    with db.engine.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    other = Database(Settings(database_url=db.engine.url.set(username=role).render_as_string(
        hide_password=False), data_dir=settings.data_dir))
    monkeypatch.setattr(upkeep_module, "_NOT_OWNED", set())
    caplog.set_level(logging.WARNING, logger=upkeep_module.log.name)
    try:
        assert upkeep(other, ROWS) == {} and upkeep(other, ROWS) == {}
    finally:
        other.engine.dispose()
        with db.engine.begin() as connection:
            connection.execute(text(f'DROP ROLE "{role}"'))
    said = [r.getMessage() for r in caplog.records if "does not own" in r.getMessage()]
    assert sorted(said) == sorted(f"upkeep: this role does not own {t}, so it cannot vacuum or "
                                  "analyze it; left to autovacuum" for t in UPKEPT_TABLES)
    assert _statistics(db)["jobs"]["vacuum_count"] == 0
    assert upkeep(db, ROWS) == dict.fromkeys(UPKEPT_TABLES, "VACUUM (ANALYZE, SKIP_LOCKED)")
