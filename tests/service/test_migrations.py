"""The same Alembic revisions create the schema on SQLite and on PostgreSQL, and readiness
compares the database's revision with the head."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.db import Database
from app.migrate import alembic_config, current_revision, head_revision, upgrade
from app.orm import Base
from app.settings import Settings

from .conftest import fresh_pg_database

TABLES = {"api_keys", "stored_objects", "datasets", "jobs", "models", "model_members",
          "certificates"}


def _check_round_trip(settings: Settings) -> None:
    db = Database(settings)
    try:
        assert current_revision(db.engine) is None
        upgrade(settings)
        upgrade(settings)  # idempotent
        assert current_revision(db.engine) == head_revision(settings) is not None
        assert set(sqlalchemy.inspect(db.engine).get_table_names()) >= TABLES
        # the migrated schema is exactly the ORM's: Alembic finds nothing to autogenerate
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        command.downgrade(alembic_config(settings), "base")
        assert not TABLES & set(sqlalchemy.inspect(db.engine).get_table_names())
    finally:
        db.engine.dispose()


def test_migrations_on_sqlite(tmp_path: Path) -> None:
    _check_round_trip(Settings(data_dir=tmp_path))


@pytest.mark.services
def test_migrations_on_postgresql(postgres_url: str) -> None:
    with fresh_pg_database(postgres_url) as url:
        _check_round_trip(Settings(database_url=url))


def _check_poison_count_revision(settings: Settings) -> None:
    """0006 -> 0007 on a database holding certificates: they keep their values and read NULL
    counts; new rows take counts; the downgrade drops the columns and keeps the rows."""
    config, db = alembic_config(settings), Database(settings)
    try:
        command.upgrade(config, "0006")
        now = "2026-12-01 12:00:00"
        with db.engine.begin() as conn:
            conn.execute(sqlalchemy.text(
                "INSERT INTO api_keys (id, name, key_hash, created_at, operator) "
                "VALUES ('k', 'k', 'h', :now, false)"), {"now": now})
            conn.execute(sqlalchemy.text(
                "INSERT INTO jobs (id, owner_id, kind, method, params, state, phase, "
                "progress_done, progress_total, attempts, max_attempts, request_sha256, "
                "created_at) VALUES ('j', 'k', 'evaluate', 'knn', '{}', 'succeeded', 'done', "
                "0, 0, 1, 3, 'r', :now)"), {"now": now})
            conn.execute(sqlalchemy.text(
                "INSERT INTO certificates (job_id, subset, sample_index, label, prediction, "
                "top_class, p_a, p_b, radius, abstain, correct) "
                "VALUES ('j', 'clean', 0, 1, 1, 1, 0.9, 0.1, 0.5, false, true)"))
        command.upgrade(config, "0007")
        assert current_revision(db.engine) == "0007"
        with db.engine.begin() as conn:
            old = conn.execute(sqlalchemy.text(
                "SELECT radius, poison_count, poison_modifications, count_prediction "
                "FROM certificates")).one()
            assert tuple(old) == (0.5, None, None, None)
            conn.execute(sqlalchemy.text(
                "INSERT INTO certificates (job_id, subset, sample_index, label, prediction, "
                "top_class, p_a, p_b, radius, abstain, correct, poison_count, "
                "poison_modifications, count_prediction) "
                "VALUES ('j', 'clean', 1, 0, 0, 0, 1.0, 0.0, 0.0, false, true, 7, 3, 0)"))
        command.downgrade(config, "0006")
        columns = {c["name"] for c in sqlalchemy.inspect(db.engine).get_columns("certificates")}
        assert not columns & {"poison_count", "poison_modifications", "count_prediction"}
        with db.engine.connect() as conn:
            count = conn.execute(sqlalchemy.text("SELECT count(*) FROM certificates")).scalar()
        assert count == 2
    finally:
        db.engine.dispose()


def test_poison_count_revision_on_sqlite(tmp_path: Path) -> None:
    _check_poison_count_revision(Settings(data_dir=tmp_path))


@pytest.mark.services
def test_poison_count_revision_on_postgresql(postgres_url: str) -> None:
    with fresh_pg_database(postgres_url) as url:
        _check_poison_count_revision(Settings(database_url=url))
