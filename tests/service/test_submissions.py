"""The one-statement certify submission (app.submissions) writes exactly the rows the ORM's
transaction writes, within the key's job quota, on a real PostgreSQL; SQLite keeps the ORM."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app import submissions
from app.db import Database
from app.orm import ApiKey, Job, WorkUnit, new_id, utcnow
from app.problems import ProblemError
from app.settings import Settings
from app.units import plan


def _certify_job(owner: str) -> Job:
    """A transient certify job as the certify route builds one."""
    return Job(
        id=new_id(), owner_id=owner, kind="certify", dataset_id=None, model_id="m" * 32,
        method="knn", params={"sigma": 1.0, "k": 5, "nested": {"a": [1, 2]}}, attack=None,
        inputs_sha256="a" * 64, inputs_inline=b"\x00npz\xff" * 40, progress_total=3,
        max_attempts=3, request_sha256="b" * 64,
    )


def _key(db: Database, name: str) -> str:
    """A new API key's id (its hash made of its name)."""
    with db.session() as session:
        key = ApiKey(name=name, key_hash=(name * 64)[:64])
        session.add(key)
        session.flush()
        return key.id


def _row(session: Any, table: Any, **where: Any) -> dict[str, Any]:
    row = session.execute(select(*table.__table__.columns).filter_by(**where)).mappings().one()
    return dict(row)


@pytest.mark.parametrize("migrated_db", ["sqlite"], indirect=True)
def test_sqlite_keeps_the_orm_transaction(migrated_db: tuple[Settings, Database]) -> None:
    with migrated_db[1].sessions() as session:
        assert not submissions.available(session)


@pytest.mark.services
@pytest.mark.parametrize("migrated_db", ["postgresql"], indirect=True)
def test_one_statement_writes_what_the_orm_writes(migrated_db: tuple[Settings, Database]) -> None:
    _, db = migrated_db
    owner = _key(db, "submissions")
    with db.sessions() as session:
        assert submissions.available(session)
        by_orm = _certify_job(owner)
        session.add(by_orm)
        session.flush()
        session.add_all(plan(by_orm))
        session.commit()
        before = utcnow()
        by_statement = _certify_job(owner)
        submissions.submit_within_quota(session, by_statement, plan(by_statement), 10)
    with db.session() as session:
        orm_job, one_job = (_row(session, Job, id=j.id) for j in (by_orm, by_statement))
        orm_unit, one_unit = (_row(session, WorkUnit, job_id=j.id) for j in (by_orm, by_statement))
    assert one_job["created_at"] >= before and one_unit["enqueued_at"] >= before
    for written in (orm_job, one_job):
        written.pop("id"), written.pop("created_at")
    for written in (orm_unit, one_unit):
        written.pop("job_id"), written.pop("enqueued_at")
    assert one_job == orm_job and one_job["state"] == "queued" and one_job["attempts"] == 0
    assert one_unit == orm_unit and one_unit["state"] == "pending"


@pytest.mark.services
@pytest.mark.parametrize("migrated_db", ["postgresql"], indirect=True)
def test_one_statement_refuses_past_the_quota_and_writes_nothing(
    migrated_db: tuple[Settings, Database],
) -> None:
    _, db = migrated_db
    owner = _key(db, "quota")
    with db.sessions() as session:
        for _ in range(2):
            job = _certify_job(owner)
            submissions.submit_within_quota(session, job, plan(job), 2)
        refused = _certify_job(owner)
        with pytest.raises(ProblemError) as caught:
            submissions.submit_within_quota(session, refused, plan(refused), 2)
        assert caught.value.status == 429
        assert "has 2 unfinished jobs" in caught.value.detail
        assert "RAB_QUOTA_JOBS" in caught.value.detail
        assert session.get(Job, refused.id) is None
        assert session.scalars(select(WorkUnit).filter_by(job_id=refused.id)).first() is None
        finished = session.get_one(Job, job.id)
        finished.state = "succeeded"  # a finished job frees its share
        session.commit()
        submissions.submit_within_quota(session, refused, plan(refused), 2)
        assert session.get(Job, refused.id) is not None


@pytest.mark.services
@pytest.mark.parametrize("migrated_db", ["postgresql"], indirect=True)
def test_a_value_the_statement_does_not_write_is_refused(
    migrated_db: tuple[Settings, Database],
) -> None:
    """A column set on the job but not written by the statement (as a column added to the
    model later would be) fails loudly instead of being lost."""
    _, db = migrated_db
    job = _certify_job(_key(db, "unwritten"))
    job.idempotency_key = "not written by the one-statement path"
    with db.sessions() as session, pytest.raises(ValueError, match="idempotency_key"):
        submissions.submit_within_quota(session, job, plan(job), 10)
    with db.sessions() as session:
        assert session.get(Job, job.id) is None
