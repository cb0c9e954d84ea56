"""Hot reads on PostgreSQL from the event loop (app.fastreads): the same answers as the
session's reads, ownership kept, a dropped connection replaced, a database away a 503."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.auth import create_key
from app.fastreads import FastReads
from app.main import create_app
from app.problems import ProblemError
from app.settings import Settings

from .conftest import fresh_pg_database, serve_in_thread
from .helpers import add_finished_job

pytestmark = pytest.mark.services


@contextmanager
def _served(tmp_path: Path, postgres_url: str, redis_url: str | None) -> Iterator[tuple]:
    """The API on a fresh database with two keys, one job of the first key holding two
    certificates: (base URL, app, first secret, second secret, job id, database URL)."""
    with fresh_pg_database(postgres_url) as database:
        settings = Settings(database_url=database, broker_url=redis_url, data_dir=tmp_path,
                            broker_key_prefix=f"rabtest-{uuid.uuid4().hex[:8]}:")
        app = create_app(settings)
        with serve_in_thread(app) as url:
            with app.state.db.session() as session:
                owner, mine = create_key(session, "owner")
                _, theirs = create_key(session, "other")
                job_id = add_finished_job(session, owner.id, [dict(
                    sample_index=index, label=1, prediction=1 if radius else -1, top_class=1,
                    p_a=0.9 - index / 2, p_b=0.1, radius=radius, abstain=not radius,
                    correct=bool(radius), poison_count=3 if radius else None,
                    poison_modifications=1, count_prediction=1,
                ) for index, radius in ((0, 0.5), (1, 0.0))])
            assert app.state.reads is not None  # PostgreSQL: the event loop's pool serves
            yield url, app, mine, theirs, job_id, database


def test_a_certificate_read_from_the_event_loop_equals_the_listed_one(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    with _served(tmp_path, postgres_url, redis_url) as (url, _app, mine, theirs, job, _db):
        with httpx.Client(base_url=url, headers={"X-API-Key": mine}) as client:
            listed = client.get(f"/v1/jobs/{job}/certificates").json()["items"]
            one = [client.get(f"/v1/jobs/{job}/certificates/{i}") for i in (0, 1)]
            assert [r.status_code for r in one] == [200, 200]
            assert [r.json() for r in one] == listed
            assert one[0].headers["content-type"] == "application/json"
            missing = client.get(f"/v1/jobs/{job}/certificates/2")
            assert missing.status_code == 404 and "certificate" in missing.json()["detail"]
            assert client.get(f"/v1/jobs/{'f' * 32}/certificates/0").status_code == 404
            assert client.get(f"/v1/jobs/{job}/certificates/0?subset=backdoor").status_code \
                == 404
        with httpx.Client(base_url=url, headers={"X-API-Key": theirs}) as other:
            answer = other.get(f"/v1/jobs/{job}/certificates/0")  # another key's job
            assert answer.status_code == 404 and "job" in answer.json()["detail"]
        assert httpx.get(f"{url}/v1/jobs/{job}/certificates/0",
                         headers={"X-API-Key": "rab_unknown"}).status_code == 401
        assert httpx.get(f"{url}/v1/jobs/{job}/certificates/0").status_code == 401


def test_connections_the_server_dropped_are_replaced_without_an_error(
    tmp_path: Path, postgres_url: str
) -> None:
    # no Redis: the key cache is off, so every request reads its key on the pool too
    with _served(tmp_path, postgres_url, None) as (url, _app, mine, _, job, database):
        path = f"{url}/v1/jobs/{job}/certificates/0"
        assert httpx.get(path, headers={"X-API-Key": mine}).status_code == 200
        admin = create_engine(database)
        with admin.connect() as conn:  # every other connection to the database ends
            ended = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalar_one()
        admin.dispose()
        assert ended >= 1
        answers = [httpx.get(path, headers={"X-API-Key": mine}) for _ in range(3)]
        assert [a.status_code for a in answers] == [200] * 3


def test_a_database_that_cannot_be_reached_is_a_503(tmp_path: Path) -> None:
    settings = Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
                        data_dir=tmp_path)
    reads = FastReads(settings)

    async def read() -> None:
        try:
            await reads.certificate("0" * 32, "clean", 0, "someone")
        finally:
            await reads.close()

    with pytest.raises(ProblemError) as raised:
        asyncio.run(read())
    assert raised.value.status == 503 and raised.value.headers["Retry-After"] == "5"
