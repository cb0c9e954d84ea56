"""Unit-of-work transitions, on SQLite and PostgreSQL: leases decide who runs a unit, attempts
are counted per unit, the vote is released once, and the reaper re-queues lost work (its
messages go through a real Celery app on the filesystem transport and are counted there)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from app.db import Database
from app.orm import ApiKey, Job, WorkUnit, utcnow
from app.settings import Settings
from app.units import VOTE, plan, reap, retry
from contract.messaging import make_celery
from workers import lifecycle

LEASE_S = 30.0


def _ensemble(db: Database, num_models: int, per_task: int) -> str:
    """A queued ensemble job with its planned units (chunks pending, vote blocked)."""
    with db.session() as session:
        key = ApiKey(name="lifecycle", key_hash=utcnow().isoformat().ljust(64, "0")[:64])
        session.add(key)
        session.flush()
        job = Job(
            owner_id=key.id, kind="evaluate", method="ensemble",
            params={"num_models": num_models, "models_per_task": per_task}, max_attempts=3,
            request_sha256="0" * 64, progress_total=num_models,
        )
        session.add(job)
        session.flush()
        session.add_all(plan(job))
        return job.id


def _unit(db: Database, job_id: str, name: str) -> WorkUnit:
    with db.session() as session:
        unit = session.get(WorkUnit, (job_id, name))
        assert unit is not None
        return unit


def _expire(db: Database, job_id: str, name: str) -> None:
    with db.session() as session:
        session.execute(
            update(WorkUnit).where(WorkUnit.job_id == job_id, WorkUnit.name == name)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_a_live_lease_keeps_the_unit_and_attempts_count_per_unit(
    migrated_db: tuple[Settings, Database],
) -> None:
    _, db = migrated_db
    job_id = _ensemble(db, num_models=4, per_task=2)
    first = lifecycle.claim(db, job_id, "chunk-0", LEASE_S, owner="w1")
    assert first is not None and first.attempt == 1 and first.args == {"start": 0, "stop": 2}
    assert lifecycle.claim(db, job_id, "chunk-0", LEASE_S, owner="w2") is None  # duplicate
    other = lifecycle.claim(db, job_id, "chunk-2", LEASE_S, owner="w2")  # its own budget
    assert other is not None and other.attempt == 1
    assert lifecycle.claim(db, job_id, VOTE, LEASE_S) is None  # blocked until chunks are done
    for attempt in (2, 3):  # the worker holding chunk-0 is lost: its lease expires
        _expire(db, job_id, "chunk-0")
        taken = lifecycle.claim(db, job_id, "chunk-0", LEASE_S, owner=f"w{attempt + 2}")
        assert taken is not None and taken.attempt == attempt
        assert not lifecycle.renew(db, first, LEASE_S)  # the old owner's lease is gone
    _expire(db, job_id, "chunk-0")
    assert lifecycle.claim(db, job_id, "chunk-0", LEASE_S) is None  # the fourth: give up
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == "failed"
        assert "chunk-0 gave up after 3 attempts" in (job.error or "")


def test_the_vote_is_released_once_when_every_chunk_is_done(
    migrated_db: tuple[Settings, Database],
) -> None:
    _, db = migrated_db
    job_id = _ensemble(db, num_models=4, per_task=2)
    claims = [lifecycle.claim(db, job_id, name, LEASE_S) for name in ("chunk-0", "chunk-2")]
    assert all(c is not None for c in claims)
    assert lifecycle.finish_chunk(db, claims[0]) == []  # type: ignore[arg-type]
    released = lifecycle.finish_chunk(db, claims[1])  # type: ignore[arg-type]
    assert [args for _, args, _ in released] == [[job_id, VOTE]]
    assert _unit(db, job_id, VOTE).state == "pending"
    assert lifecycle.finish_chunk(db, claims[1]) == []  # a redelivered chunk: no second vote


def _filesystem_broker(tmp_path: Path) -> tuple[Path, Any]:
    """A Celery app on a filesystem queue under ``tmp_path``, and the queue's folder."""
    queue = tmp_path / "queue"
    queue.mkdir()
    return queue, make_celery("filesystem://", {
        "data_folder_in": str(queue), "data_folder_out": str(queue),
        "control_folder": str(tmp_path)})


def _messages(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix == ".msg")


def test_the_reaper_requeues_lost_work_and_retry_resumes(
    migrated_db: tuple[Settings, Database], tmp_path: Path
) -> None:
    _, db = migrated_db
    queue, celery = _filesystem_broker(tmp_path)
    job_id = _ensemble(db, num_models=4, per_task=2)
    running = lifecycle.claim(db, job_id, "chunk-0", LEASE_S, owner="dead")
    assert running is not None
    assert reap(db, celery, resend_after_s=3600) == 0  # a live lease, a fresh message
    _expire(db, job_id, "chunk-0")
    assert reap(db, celery, resend_after_s=3600) == 1  # the dead worker's chunk
    assert _unit(db, job_id, "chunk-0").state == "pending" and _messages(queue) == 1
    # messages lost (a broker restarted without persistence): re-sent once nothing runs
    assert reap(db, celery, resend_after_s=0) == 2 and _messages(queue) == 3
    # a failed job resumes with fresh budgets, done units stay done
    done = lifecycle.claim(db, job_id, "chunk-2", LEASE_S)
    assert done is not None
    assert lifecycle.finish_chunk(db, done) == []
    lifecycle.fail(db, lifecycle.claim(db, job_id, "chunk-0", LEASE_S), "boom")  # type: ignore[arg-type]
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == "failed"
        messages = retry(session, job)
        assert [args for _, args, _ in messages] == [[job_id, "chunk-0"]]
    with db.session() as session:
        states = dict(session.execute(
            select(WorkUnit.name, WorkUnit.state).where(WorkUnit.job_id == job_id)).all())
        job = session.get(Job, job_id)
        assert job is not None and job.state == "queued" and job.error is None
    assert states == {"chunk-0": "pending", "chunk-2": "done", VOTE: "blocked"}
    assert _unit(db, job_id, "chunk-0").attempts == 0


def _certify_jobs(db: Database, model_id: str, inputs: list[int]) -> list[str]:
    """Queued certify jobs of ``model_id`` with their planned unit, one per entry of
    ``inputs`` (its number of inputs), oldest first."""
    ids = []
    with db.session() as session:
        key = ApiKey(name="batching", key_hash=utcnow().isoformat().ljust(64, "1")[:64])
        session.add(key)
        session.flush()
        for i, count in enumerate(inputs):
            job = Job(
                owner_id=key.id, kind="certify", method="ensemble", model_id=model_id,
                params={}, max_attempts=3, request_sha256="0" * 64, progress_total=count,
                inputs_sha256=f"{i:064d}", created_at=utcnow() + timedelta(milliseconds=i),
            )
            session.add(job)
            session.flush()
            session.add_all(plan(job))
            ids.append(job.id)
    return ids


def test_sibling_certify_jobs_are_claimed_under_leases_that_expire_with_their_worker(
    migrated_db: tuple[Settings, Database], tmp_path: Path
) -> None:
    """A worker batching certify jobs of one model claims the queued ones (oldest first,
    within its cap on inputs, none of another model), each under its own lease; their own
    messages then find nothing to run; if the worker dies, every lease expires and the
    reaper re-queues each job; once finished, a late message does nothing."""
    _, db = migrated_db
    first, *others = _certify_jobs(db, "model-a", [1, 1, 2, 5, 1])
    (elsewhere,) = _certify_jobs(db, "model-b", [1])
    own = lifecycle.claim(db, first, "certify", LEASE_S, owner="w1")
    assert own is not None and own.model_id == "model-a"
    siblings = lifecycle.claim_siblings(db, own, LEASE_S, max_inputs=4, owner="w1")
    assert [c.job_id for c in siblings] == [others[0], others[1], others[3]]  # 1 + 2 + 1
    assert all(c.attempt == 1 and c.lease_owner == "w1" for c in siblings)
    for sibling in siblings:  # its message, delivered to another worker: nothing to run
        assert lifecycle.claim(db, sibling.job_id, "certify", LEASE_S, owner="w2") is None
        assert _unit(db, sibling.job_id, "certify").state == "running"
    assert _unit(db, others[2], "certify").state == "pending"  # 5 inputs: over the cap
    assert _unit(db, elsewhere, "certify").state == "pending"  # another model
    assert lifecycle.claim_siblings(db, own, LEASE_S, max_inputs=4, owner="w2") == []
    # the worker dies mid-batch: every claimed job's lease expires, the reaper re-queues each
    celery = make_celery("filesystem://", {
        "data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path),
        "control_folder": str(tmp_path)})
    for job_id in [first, *(c.job_id for c in siblings)]:
        _expire(db, job_id, "certify")
    assert reap(db, celery, resend_after_s=3600) == 4
    assert {_unit(db, j, "certify").state for j in [first, *others]} == {"pending"}
    # another worker takes them again (a second attempt each) and finishes them
    again = lifecycle.claim(db, others[0], "certify", LEASE_S, owner="w3")
    assert again is not None and again.attempt == 2
    batch = [again, *lifecycle.claim_siblings(db, again, LEASE_S, max_inputs=100, owner="w3")]
    assert {c.job_id for c in batch} == {first, *others}
    for claim in batch:
        lifecycle.succeed(db, claim, [], {"batch": {"jobs": len(batch)}})
    for job_id in [first, *others]:  # late messages: nothing to run
        assert lifecycle.claim(db, job_id, "certify", LEASE_S, owner="w4") is None
    with db.session() as session:
        states = set(session.scalars(select(Job.state).where(Job.model_id == "model-a")))
    assert states == {"succeeded"}


def test_the_reaper_releases_only_the_votes_whose_chunks_are_all_done(
    migrated_db: tuple[Settings, Database], tmp_path: Path
) -> None:
    """A vote whose release was lost (its last chunk finished, the worker died before
    sending it) is released by the reaper, once; a vote with a chunk still to do is not."""
    _, db = migrated_db
    queue, celery = _filesystem_broker(tmp_path)
    ready, waiting = _ensemble(db, 4, 2), _ensemble(db, 4, 2)
    with db.session() as session:  # every chunk done, the vote left blocked
        session.execute(update(WorkUnit).where(WorkUnit.job_id.in_((ready, waiting)),
                                               WorkUnit.name != VOTE).values(state="done"))
        session.execute(update(WorkUnit).where(WorkUnit.job_id == waiting,
                                               WorkUnit.name == "chunk-2")
                        .values(state="pending", enqueued_at=utcnow()))
    assert reap(db, celery, resend_after_s=3600) == 1 and _messages(queue) == 1
    assert _unit(db, ready, VOTE).state == "pending"
    assert _unit(db, waiting, VOTE).state == "blocked"
    assert reap(db, celery, resend_after_s=3600) == 0  # released once
