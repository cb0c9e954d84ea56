"""Job-row transitions of the workers, on SQLite and PostgreSQL: who may start the vote of an
ensemble, and how redeliveries are counted."""

from __future__ import annotations

from sqlalchemy import update

from app.db import Database
from app.orm import ApiKey, Job
from app.settings import Settings
from workers import lifecycle


def _running_ensemble(db: Database, num_models: int, stored: int) -> str:
    with db.session() as session:
        key = ApiKey(name="lifecycle", key_hash="0" * 64)
        session.add(key)
        session.flush()
        job = Job(
            owner_id=key.id, kind="evaluate", method="ensemble",
            params={"num_models": num_models}, max_attempts=3, request_sha256="0" * 64,
            state="running", phase="training models", progress_done=stored,
            progress_total=num_models,
        )
        session.add(job)
        session.flush()
        return job.id


def _set(db: Database, job_id: str, **values: object) -> None:
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def _phase(db: Database, job_id: str) -> str:
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.phase


def test_one_vote_starts_once_every_member_is_stored(
    migrated_db: tuple[Settings, Database],
) -> None:
    _, db = migrated_db
    job_id = _running_ensemble(db, num_models=3, stored=2)
    assert not lifecycle.start_aggregation(db, job_id, 3, resume=False)  # a member is missing
    assert not lifecycle.start_aggregation(db, job_id, 3, resume=True)
    _set(db, job_id, progress_done=3)
    assert lifecycle.start_aggregation(db, job_id, 3, resume=False)
    assert _phase(db, job_id) == lifecycle.AGGREGATING
    # a second aggregation task (queued by another chunk, or by a redelivered chunk whose
    # worker died after storing the last member) does nothing while the first one runs ...
    assert not lifecycle.start_aggregation(db, job_id, 3, resume=False)
    # ... but the redelivery of a lost aggregation task runs it again
    assert lifecycle.start_aggregation(db, job_id, 3, resume=True)
    _set(db, job_id, state="succeeded")
    assert not lifecycle.start_aggregation(db, job_id, 3, resume=True)


def test_redeliveries_count_attempts_up_to_the_cap(migrated_db: tuple[Settings, Database]) -> None:
    _, db = migrated_db
    job_id = _running_ensemble(db, num_models=2, stored=0)
    _set(db, job_id, state="queued", attempts=0)
    first = lifecycle.claim(db, job_id, redelivered=False)
    assert first is not None and first.attempt == 1
    again = lifecycle.claim(db, job_id, redelivered=False)  # another chunk of the same job
    assert again is not None and again.attempt == 1
    for attempt in (2, 3):
        claimed = lifecycle.claim(db, job_id, redelivered=True)
        assert claimed is not None and claimed.attempt == attempt
    assert lifecycle.claim(db, job_id, redelivered=True) is None  # the fourth delivery: give up
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == "failed" and "3 attempts" in (job.error or "")
