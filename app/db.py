"""Database engine and sessions shared by the API and the workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings


def make_engine(settings: Settings) -> Engine:
    """An engine for ``settings``; SQLite gets WAL, foreign keys and a busy timeout.

    The pool allows as many connections as the server's thread pool runs requests (40), so
    concurrent requests wait for a thread, not for a connection."""
    url = settings.resolved_database_url
    pool = {"pool_size": 10, "max_overflow": 30}
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **pool
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def finish(session: Session, ok: bool) -> None:
    """End ``session``: commit if ``ok``, else roll back; then close it."""
    try:
        if ok:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


class Database:
    """An engine plus a session factory, and the settings they were made of; ``dispose``
    after a fork (engines do not survive it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One session, committed on success and rolled back on error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        """Drop pooled connections (call in a forked child before first use)."""
        self.engine.dispose(close=False)
