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
