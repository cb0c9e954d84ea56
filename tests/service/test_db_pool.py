"""The PostgreSQL pool: idle connections are tested before use, busy ones are not (app.db)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.db import PING_AFTER_IDLE_S, Database
from app.settings import Settings

from .conftest import fresh_pg_database

pytestmark = pytest.mark.services


def _backend_pid(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


@pytest.fixture
def counted(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Database, list[float], str]]:
    """A ``Database`` on a fresh PostgreSQL database, the times its pool tested a connection
    (the dialect's own ping, still run) and the database URL."""
    with fresh_pg_database(postgres_url) as url:
        db = Database(Settings(database_url=url, data_dir=tmp_path))
        pings: list[float] = []
        ping = db.engine.dialect.do_ping

        def counted_ping(dbapi_conn: object) -> bool:
            pings.append(time.monotonic())
            return ping(dbapi_conn)

        monkeypatch.setattr(db.engine.dialect, "do_ping", counted_ping)
        try:
            yield db, pings, url
        finally:
            db.engine.dispose()


def test_a_connection_dropped_while_idle_is_replaced_before_use(
    counted: tuple[Database, list[float], str],
) -> None:
    db, pings, url = counted
    first = _backend_pid(db)
    admin = create_engine(url)
    with admin.connect() as conn:  # the server ends it while it lies in the pool
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"),
                            {"pid": first}).scalar_one()
    admin.dispose()
    time.sleep(PING_AFTER_IDLE_S + 0.1)
    assert _backend_pid(db) != first  # no error: tested, discarded, replaced
    assert len(pings) == 1


def test_a_connection_in_steady_use_is_not_tested(
    counted: tuple[Database, list[float], str],
) -> None:
    db, pings, _ = counted
    pids = {_backend_pid(db) for _ in range(50)}
    assert len(pids) == 1 and pings == []  # one connection, reused, never pinged
    time.sleep(PING_AFTER_IDLE_S + 0.1)
    assert _backend_pid(db) in pids and len(pings) == 1  # idle: tested, still good


def test_connections_opened_for_a_burst_are_kept_for_the_next(
    counted: tuple[Database, list[float], str],
) -> None:
    db, _, _ = counted

    def burst(width: int) -> set[int]:  # ``width`` connections in use at once
        with ExitStack() as stack:
            connections = [stack.enter_context(db.engine.connect()) for _ in range(width)]
            return {c.execute(text("SELECT pg_backend_pid()")).scalar_one()
                    for c in connections}

    first = burst(32)
    assert len(first) == 32
    assert burst(32) == first  # no backend closed on its return and started afresh
