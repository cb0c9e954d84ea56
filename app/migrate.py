"""Programmatic Alembic: upgrade to head at start-up, and check the revision for /readyz."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from app.settings import Settings


def alembic_config(settings: Settings) -> Config:
    """The Alembic configuration of ``migrations/`` pointed at the settings' database."""
    directory = settings.resolved_migrations_dir
    config = Config(str(directory / "alembic.ini"))
    config.set_main_option("script_location", str(directory))
    config.attributes["database_url"] = settings.resolved_database_url
    return config


def upgrade(settings: Settings) -> None:
    """Apply every pending revision (idempotent; safe to call at each start-up)."""
    if settings.resolved_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), "head")


def head_revision(settings: Settings) -> str | None:
    """The newest revision in ``migrations/versions``."""
    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None before the first upgrade)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
