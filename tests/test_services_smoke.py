"""Day-one proof that the test wiring reaches real PostgreSQL and Redis servers."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.services


def test_postgres_round_trip(postgres_url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres_url)
    table = f"rab_smoke_{uuid.uuid4().hex[:12]}"
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"CREATE TEMP TABLE {table} (v double precision)"))
            conn.execute(sqlalchemy.text(f"INSERT INTO {table} VALUES (1.5), (2.5)"))
            total = conn.execute(sqlalchemy.text(f"SELECT sum(v) FROM {table}")).scalar_one()
            server = conn.execute(sqlalchemy.text("SHOW server_version")).scalar_one()
    finally:
        engine.dispose()
    assert total == pytest.approx(4.0)
    assert server  # a real server answered with its version


def test_redis_round_trip(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    key = f"rab:smoke:{uuid.uuid4().hex}"
    try:
        client.set(key, b"ok", ex=30)
        assert client.get(key) == b"ok"
        assert client.incr(key + ":n") == 1
    finally:
        client.delete(key, key + ":n")
        client.close()
