"""Shared fixtures: real PostgreSQL / Redis endpoints and the shared data directory.

Tests that need a service ask for the ``postgres_url`` or ``redis_url`` fixture. When the service
cannot be reached the test is skipped with the reason, unless ``RAB_REQUIRE_SERVICES=1`` (set by
CI), in which case it fails: CI must never pass by skipping the real-services tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def _services_required() -> bool:
    return os.environ.get("RAB_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skip the calling test, or fail it when real services are required."""
    if _services_required():
        pytest.fail(f"RAB_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _probe(url: str, connect: Callable[[str], None], what: str) -> str:
    try:
        connect(url)
    except Exception as exc:  # any connection error means "unreachable"
        unavailable(f"{what} unreachable at {url}: {exc}")
    return url


def _connect_postgres(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    finally:
        engine.dispose()


def _connect_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of a reachable PostgreSQL (``RAB_TEST_DATABASE_URL``)."""
    url = os.environ.get("RAB_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    return _probe(url, _connect_postgres, "PostgreSQL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a reachable Redis (``RAB_TEST_REDIS_URL``)."""
    url = os.environ.get("RAB_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    return _probe(url, _connect_redis, "Redis")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared real-data directory (``RAB_SHARED_DATA`` or ``../shared/data``);
    missing, it skips the test, or fails it where real services (and data) are required."""
    path = Path(os.environ.get("RAB_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        unavailable(f"shared data directory {path} not found (set RAB_SHARED_DATA)")
    return path
