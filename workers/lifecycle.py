"""Job-row transitions done by workers: claim, progress, cancel checks, success and failure.

The job row is the source of truth: a redelivered task (worker killed, late ack) claims the
row again and counts the attempt; after ``max_attempts`` the job fails instead of looping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.db import Database
from app.orm import Certificate, Job, ModelMember, utcnow
from contract.api import TERMINAL_STATES

AGGREGATING = "aggregating"  # phase prefix once every ensemble member is stored


class JobCancelledError(Exception):
    """The job was cancelled (or finished elsewhere) while this worker ran it."""


@dataclass(frozen=True)
class Claim:
    """What a worker needs to run a job (ids and plain values, no ORM objects)."""

    job_id: str
    kind: str
    owner_id: str
    dataset_id: str | None
    model_id: str | None
    method: str
    params: dict[str, Any]
    attack: dict[str, Any] | None
    inputs_sha256: str | None
    attempt: int


def claim(db: Database, job_id: str, *, redelivered: bool) -> Claim | None:
    """Mark the job running; None when there is nothing to run.

    The first delivery of a job's first task counts attempt 1, and every redelivery (a worker
    was lost holding the message) one more, so the cap also bounds fanned-out ensembles.
    """
    with db.session() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.state in TERMINAL_STATES:
            return None
        if redelivered or job.attempts == 0:
            job.attempts += 1
        if job.attempts > job.max_attempts:
            job.state, job.finished_at = "failed", utcnow()
            job.error = f"gave up after {job.max_attempts} attempts (worker lost each time)"
            return None
        if job.state == "queued":
            job.state = "running"
            job.phase = "training models" if job.method == "ensemble" else "starting"
        job.started_at = job.started_at or utcnow()
        return Claim(
            job_id=job.id, kind=job.kind, owner_id=job.owner_id, dataset_id=job.dataset_id,
            model_id=job.model_id, method=job.method, params=dict(job.params),
            attack=None if job.attack is None else dict(job.attack),
            inputs_sha256=job.inputs_sha256,
            attempt=job.attempts,
        )


def report(db: Database, job_id: str, done: int, total: int, phase: str) -> None:
    """Record progress; raises ``JobCancelledError`` when the job is no longer running."""
    with db.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running")
            .values(progress_done=done, progress_total=total, phase=phase)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise JobCancelledError(job_id)


def fail(db: Database, job_id: str, message: str) -> None:
    """Mark a running job failed with ``message``."""
    with db.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running")
            .values(state="failed", phase="failed", error=message[:4000], finished_at=utcnow())
        )


def succeed(
    db: Database,
    job_id: str,
    certificates: Iterable[dict[str, Any]],
    summary: dict[str, Any],
    extra_rows: Iterable[object] = (),
    model_id: str | None = None,
) -> None:
    """Store the certificates (replacing any from an earlier attempt) and finish the job.

    One transaction: either everything is visible and the job succeeded, or nothing is.
    """
    with db.session() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.state != "running":
            raise JobCancelledError(job_id)
        session.execute(delete(Certificate).where(Certificate.job_id == job_id))
        rows = [{"job_id": job_id, **c} for c in certificates]
        if rows:
            session.execute(insert(Certificate), rows)
        session.add_all(extra_rows)
        job.summary, job.state, job.phase = summary, "succeeded", "done"
        job.progress_done = job.progress_total
        job.finished_at = utcnow()
        if model_id is not None:
            job.model_id = model_id


def add_member(db: Database, job_id: str, member: ModelMember) -> bool:
    """Record a trained ensemble member and count it; False if model k was already stored.

    The unique (job, index) constraint makes the counter exact whatever the redeliveries.
    """
    with db.session() as session:
        try:
            with session.begin_nested():
                session.add(member)
        except IntegrityError:
            return False
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running")
            .values(progress_done=Job.progress_done + 1)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise JobCancelledError(job_id)
    return True


def stored_members(db: Database, job_id: str) -> set[int]:
    """Indices of the ensemble members already stored for the job."""
    with db.session() as session:
        return set(
            session.scalars(select(ModelMember.member_index).where(ModelMember.job_id == job_id))
        )


def start_aggregation(db: Database, job_id: str, num_models: int, *, resume: bool) -> bool:
    """Mark the job as voting; True when this aggregation task should run.

    Needs every one of the ``num_models`` members stored and the job running. A first delivery
    runs only if no aggregation has started (duplicates queued by concurrent chunks do
    nothing); a redelivery (``resume``: the worker voting was lost) always runs again.
    """
    conditions = [Job.id == job_id, Job.state == "running", Job.progress_done >= num_models]
    if not resume:
        conditions.append(Job.phase.not_like(f"{AGGREGATING}%"))
    with db.session() as session:
        result = session.execute(update(Job).where(*conditions).values(phase=AGGREGATING))
        return bool(result.rowcount)  # type: ignore[attr-defined]
