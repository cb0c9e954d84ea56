"""Unit-of-work transitions, on SQLite and PostgreSQL: leases decide who runs a unit, attempts
are counted per unit, the vote is released once, and the reaper re-queues lost work (its
messages go through a real Celery app on the filesystem transport and are counted there)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.utils.collections import LimitedSet
from sqlalchemy import event, insert, select, update

from app.db import Database
from app.orm import ApiKey, Certificate, Job, WorkUnit, utcnow
from app.settings import Settings
from app.units import VOTE, first_message_id, plan, reap, retry
from contract.messaging import make_celery
from workers import lifecycle, tasks

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
    own = lifecycle.claim(db, first, "certify", LEASE_S, owner="w1", batch_inputs=5)
    assert own is not None and own.model_id == "model-a"
    siblings = own.batch  # 4 inputs besides its own
    assert [c.job_id for c in siblings] == [others[0], others[1], others[3]]  # 1 + 2 + 1
    assert all(c.attempt == 1 and c.lease_owner == "w1" for c in siblings)
    for sibling in siblings:  # its message, delivered to another worker: nothing to run
        assert lifecycle.claim(db, sibling.job_id, "certify", LEASE_S, owner="w2") is None
        assert _unit(db, sibling.job_id, "certify").state == "running"
    assert _unit(db, others[2], "certify").state == "pending"  # 5 inputs: over the cap
    assert _unit(db, elsewhere, "certify").state == "pending"  # another model
    other_model = lifecycle.claim(db, elsewhere, "certify", LEASE_S, owner="w2", batch_inputs=9)
    assert other_model is not None and other_model.batch == ()  # none of model-a's
    # the worker dies mid-batch: every claimed job's lease expires, the reaper re-queues each
    celery = make_celery("filesystem://", {
        "data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path),
        "control_folder": str(tmp_path)})
    for job_id in [first, *(c.job_id for c in siblings)]:
        _expire(db, job_id, "certify")
    assert reap(db, celery, resend_after_s=3600) == 4
    assert {_unit(db, j, "certify").state for j in [first, *others]} == {"pending"}
    # another worker takes them again (a second attempt each) and finishes them
    again = lifecycle.claim(db, others[0], "certify", LEASE_S, owner="w3", batch_inputs=100)
    assert again is not None and again.attempt == 2
    batch = [again, *again.batch]
    assert {c.job_id for c in batch} == {first, *others}
    assert {c.job_id: c.attempt for c in batch} == {  # the one over the cap: its first
        **dict.fromkeys([first, *others], 2), others[2]: 1}
    for claim in batch:
        lifecycle.succeed(db, claim, [], {"batch": {"jobs": len(batch)}})
    for job_id in [first, *others]:  # late messages: nothing to run
        assert lifecycle.claim(db, job_id, "certify", LEASE_S, owner="w4") is None
    with db.session() as session:
        states = set(session.scalars(select(Job.state).where(Job.model_id == "model-a")))
    assert states == {"succeeded"}


def _row(index: int, radius: float) -> dict[str, Any]:
    return {"subset": "inputs", "sample_index": index, "label": None, "prediction": 1,
            "top_class": 1, "p_a": 0.9, "p_b": 0.1, "radius": radius, "abstain": False,
            "correct": None}


def _stored(db: Database, job_id: str) -> list[tuple[int, float]]:
    with db.session() as session:
        return [tuple(row) for row in session.execute(
            select(Certificate.sample_index, Certificate.radius)
            .where(Certificate.job_id == job_id).order_by(Certificate.sample_index)
        )]


def test_a_batch_finishes_each_running_job_with_its_own_rows_and_summary(
    migrated_db: tuple[Settings, Database],
) -> None:
    """One transaction finishes the batch: every job still running gets its own rows and
    summary, a job cancelled meanwhile is skipped and keeps none; a second attempt's rows
    replace what an earlier attempt of the same job left."""
    _, db = migrated_db
    first, second, third = _certify_jobs(db, "model-c", [1, 2, 1])
    own = lifecycle.claim(db, first, "certify", LEASE_S, owner="w1", batch_inputs=8)
    assert own is not None and [c.job_id for c in own.batch] == [second, third]
    with db.session() as session:
        session.execute(update(Job).where(Job.id == third).values(state="cancelled"))
    claims = (own, *own.batch)
    skipped = lifecycle.succeed_all(db, [
        (claims[0], [_row(0, 1.0)], {"batch": 1}),
        (claims[1], [_row(0, 2.0), _row(1, 3.0)], {"batch": 2}),
        (claims[2], [_row(0, 4.0)], {"batch": 1}),
    ], durable=False)
    assert skipped == [claims[2]]
    assert _stored(db, first) == [(0, 1.0)] and _stored(db, second) == [(0, 2.0), (1, 3.0)]
    assert _stored(db, third) == []
    with db.session() as session:
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.model_id == "model-c"))}
    assert [jobs[j].state for j in (first, second, third)] == ["succeeded", "succeeded",
                                                               "cancelled"]
    assert jobs[first].summary == {"batch": 1} and jobs[second].summary == {"batch": 2}
    assert jobs[second].progress_done == 2 and jobs[second].finished_at is not None
    assert {_unit(db, j, "certify").state for j in (first, second)} == {"done"}
    # an attempt that left rows (say, its success was lost), then a second one
    (again,) = _certify_jobs(db, "model-d", [2])
    lost = lifecycle.claim(db, again, "certify", LEASE_S, owner="w1")
    assert lost is not None
    with db.session() as session:
        session.execute(insert(Certificate), [{"job_id": again, **_row(i, 9.0)}
                                              for i in range(3)])
    _expire(db, again, "certify")
    retried = lifecycle.claim(db, again, "certify", LEASE_S, owner="w2")
    assert retried is not None and retried.attempt == 2
    lifecycle.succeed(db, retried, [_row(0, 5.0), _row(1, 6.0)], {})
    assert _stored(db, again) == [(0, 5.0), (1, 6.0)]


def test_a_certify_batch_is_claimed_and_finished_in_one_statement_each_on_postgresql(
    migrated_db: tuple[Settings, Database],
) -> None:
    """On PostgreSQL the claim of a certify batch, a claim that finds nothing, and the
    batch's success are one statement each (``workers.claims``, ``workers.successes``); on
    SQLite the same statements run in turn. The outcome is the same on both."""
    _, db = migrated_db
    first, *others = _certify_jobs(db, "model-e", [1, 2, 1])
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        own = lifecycle.claim(db, first, "certify", LEASE_S, owner="w1", batch_inputs=4)
        counts = [len(statements)]
        assert lifecycle.claim(db, others[0], "certify", LEASE_S, owner="w2") is None
        counts.append(len(statements) - sum(counts))
        assert own is not None and [c.job_id for c in own.batch] == others
        claims = (own, *own.batch)
        assert lifecycle.succeed_all(db, [
            (claim, [_row(i, float(i)) for i in range(len(claims) - k)], {"batch": 3})
            for k, claim in enumerate(claims)
        ], durable=False) == []
        counts.append(len(statements) - sum(counts))
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    if db.engine.dialect.name == "postgresql":
        assert counts == [1, 1, 1], statements
    assert [len(_stored(db, c.job_id)) for c in claims] == [3, 2, 1]
    assert {_unit(db, c.job_id, "certify").state for c in claims} == {"done"}
    with db.session() as session:
        jobs = session.scalars(select(Job).where(Job.model_id == "model-e")).all()
    assert {(j.state, j.attempts, j.progress_done == j.progress_total) for j in jobs} == {
        ("succeeded", 1, True)}
    assert all(j.summary == {"batch": 3} and j.started_at and j.finished_at for j in jobs)


def test_only_an_untouched_certify_job_succeeds_unclaimed_in_one_statement(
    migrated_db: tuple[Settings, Database],
) -> None:
    """A certify job no one has touched succeeds unclaimed in one statement (PostgreSQL):
    its first attempt counted on job and unit, its rows stored. One with other inputs or
    another model, one claimed first (its claim finishes it), one cancelled, or one already
    finished is left as it is, and nothing of the unclaimed result is stored. SQLite has no
    such statement: there a job is always claimed."""
    _, db = migrated_db
    jobs = _certify_jobs(db, "model-u", [1, 1, 1, 1])
    sha = [f"{i:064d}" for i in range(len(jobs))]

    def unclaimed(i: int, model: str = "model-u", inputs: str | None = None) -> bool:
        return lifecycle.succeed_unclaimed(db, jobs[i], "certify", model, inputs or sha[i],
                                           [_row(0, float(i + 1))], {"batch": "alone"})

    def state(i: int) -> tuple[Any, ...]:
        with db.session() as session:
            job = session.get_one(Job, jobs[i])
            unit = session.get_one(WorkUnit, (jobs[i], "certify"))
            return job.state, job.attempts, unit.state, unit.attempts

    if db.engine.dialect.name != "postgresql":
        assert not unclaimed(0) and state(0) == ("queued", 0, "pending", 0)
        return
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda _c, _k, statement, *_: statements.append(statement))
    assert unclaimed(0) and len(statements) == 1, statements
    assert state(0) == ("succeeded", 1, "done", 1) and _stored(db, jobs[0]) == [(0, 1.0)]
    with db.session() as session:
        job = session.get_one(Job, jobs[0])
        assert job.summary == {"batch": "alone"} and job.started_at and job.finished_at
        assert job.progress_done == job.progress_total
    assert not unclaimed(0) and _stored(db, jobs[0]) == [(0, 1.0)]  # finished: once
    assert not unclaimed(1, inputs=sha[2]) and not unclaimed(1, model="model-x")
    assert state(1) == ("queued", 0, "pending", 0)
    own = lifecycle.claim(db, jobs[1], "certify", LEASE_S, owner="w1")
    assert own is not None and not unclaimed(1) and state(1) == ("running", 1, "running", 1)
    lifecycle.succeed(db, own, [_row(0, 7.0)], {})
    assert _stored(db, jobs[1]) == [(0, 7.0)]
    with db.session() as session:
        session.execute(update(Job).where(Job.id == jobs[2]).values(state="cancelled"))
    assert not unclaimed(2) and state(2)[0] == "cancelled" and _stored(db, jobs[2]) == []
    assert unclaimed(3) and state(3) == ("succeeded", 1, "done", 1)


def test_one_heartbeat_thread_renews_every_running_lease_until_its_unit_ends(
    migrated_db: tuple[Settings, Database],
) -> None:
    """Two units running at once in one process, each under a 0.6 s lease: both leases are
    renewed (every 0.2 s) while they run, by the process's one heartbeat thread, and neither
    after its unit ended."""
    _, db = migrated_db
    jobs = _certify_jobs(db, "model-h", [1, 1])
    claims = [lifecycle.claim(db, job_id, "certify", 0.6, owner="w1") for job_id in jobs]
    assert None not in claims

    def expiries() -> list[Any]:
        return [_unit(db, job_id, "certify").lease_expires_at for job_id in jobs]

    taken = expiries()
    threads = threading.active_count()
    with lifecycle.Heartbeat(db, claims[:1], 0.6), lifecycle.Heartbeat(db, claims[1:], 0.6):
        time.sleep(1.0)
        assert threading.active_count() <= threads + 1  # one thread, if it was not running
    time.sleep(0.3)  # a renewal under way as the units ended has landed
    renewed = expiries()
    assert all(after > before for before, after in zip(taken, renewed, strict=True))
    time.sleep(0.6)
    assert expiries() == renewed


def test_only_its_first_message_is_dropped_for_a_job_finished_in_another_batch(
    migrated_db: tuple[Settings, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that finished a certify job drops that job's first message (its
    submission's) unread; a later one (the reaper's, say after a crash lost the
    batch's success) has another id and is claimed and run."""
    settings, db = migrated_db
    for name, value in {"settings": settings, "db": db}.items():
        monkeypatch.setitem(tasks._resources, name, value)
    monkeypatch.setattr(tasks.worker_state, "revoked", LimitedSet(maxlen=10))
    (job_id,) = _certify_jobs(db, "model-f", [1])
    tasks._finished_here([job_id])
    # the worker's main loop drops it on delivery (its own revoked set, no broadcast) ...
    assert first_message_id(job_id, "certify") in tasks.worker_state.revoked
    ran: list[lifecycle.Claim] = []
    monkeypatch.setattr(tasks, "_certify_inputs", ran.append)
    tasks._serve(job_id, "certify", first_message_id(job_id, "certify"))  # ... or the task
    assert ran == [] and _unit(db, job_id, "certify").state == "pending"  # not even claimed
    tasks._serve(job_id, "certify", "sent-again-by-the-reaper")
    assert [claim.job_id for claim in ran] == [job_id]
    assert _unit(db, job_id, "certify").attempts == 1


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
