"""Database engine and sessions shared by the API and the workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings


def make_engine(settings: Settings) -> Engine:
    """An engine for ``settings``; SQLite gets WAL, foreign keys and a busy timeout.

    The pool allows as many connections as the server's thread pool runs requests (40), so
    concurrent requests wait for a thread, not for a connection. It hands out the connection
    returned last (LIFO): the busy ones stay busy and are never tested before use (see
    :func:`_ping_when_idle`), while those beyond the load lie idle; handed out in turn (FIFO),
    every connection of a pool wider than the load idles past the threshold between uses and
    each checkout cost a ping (6 % of a certify request's time at 32 clients, measured).

    All 40 are kept once opened (no overflow): with 10 kept and 30 more allowed, every burst of
    certify submissions (32 clients' next requests arrive together as a batch's answers go out)
    opened connections that were closed again on their return, 25 - 50 new PostgreSQL sessions
    a second at 32 clients (each a backend started, authenticated and its statements prepared
    afresh); kept, the sessions stop growing once the pool is as wide as the load, and the
    32-client throughput rose about 8 % (209 / 235 / 240 and 218 / 237 / 237 -> 235 / 271 /
    263 and 239 / 242 / 288 req/s, alternating, ``/tmp`` script). The most connections a
    process holds is unchanged, 40."""
    url = settings.resolved_database_url
    pool = {"pool_size": 40, "max_overflow": 0, "pool_use_lifo": True}
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
    engine = create_engine(url, **pool)
    _ping_when_idle(engine)
    return engine


#: A pooled connection unused this long is tested before it is handed out again.
PING_AFTER_IDLE_S = 0.25


def _ping_when_idle(engine: Engine) -> None:
    """Test a pooled connection at checkout (the dialect's ping, one round trip) only if it
    lay unused for :data:`PING_AFTER_IDLE_S`: a connection the server dropped (a restart, an
    idle timeout) is replaced before use, while one that is busy - every connection of a loaded
    API or worker, reused within milliseconds - costs no extra round trip per transaction, as
    ``pool_pre_ping`` would (measured: 15 % of a batch of certify jobs' commit). A server
    restarting takes longer than the threshold, so the connections that outlive it were idle
    longer and are tested; one that fails in use all the same has its pool invalidated by
    SQLAlchemy, and the error is the caller's as with any lost database (503 in the API)."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the pool discards it and connects afresh
            raise DisconnectionError(f"idle connection lost: {exc}") from exc


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
