"""A job's units of work: which there are, sending their messages, and the reaper.

The job row and its ``work_units`` rows are the truth; broker messages only wake a worker. The
API writes a job with all its units in one transaction, then sends one message per pending
unit. :func:`reap` (run by the API every ``RAB_REAP_INTERVAL_S`` and at start-up) repairs what
a lost worker, broker or database connection left behind:

- a running unit whose lease expired (its worker died or lost the database) is re-queued;
- a pending unit whose message went out more than ``RAB_RESEND_AFTER_S`` ago, of a job none
  of whose units is running, is sent again (a broker restarted without persistence lost it);
  a duplicate message is harmless, since a worker claims a unit only when it is pending or
  its lease has expired;
- an ensemble (or partition job) whose model chunks are all done gets its vote queued.

So a job recovers within about a lease plus a reap interval of losing its worker, whatever
the broker's visibility timeout.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, aliased

from app.certify_queue import CERTIFY_KIND, CERTIFY_UNIT
from app.db import Database
from app.orm import UNFINISHED, Job, WorkUnit, utcnow
from contract.jobs import models_to_train
from contract.messaging import (
    CERTIFY_TASK,
    ENSEMBLE_AGGREGATE_TASK,
    ENSEMBLE_CHUNK_TASK,
    KNN_TASK,
    PARTITION_AGGREGATE_TASK,
    PARTITION_CHUNK_TASK,
    queue_for,
)

log = logging.getLogger(__name__)

VOTE = "vote"
#: ``(chunk task, vote task)`` of each method that trains models (``contract.jobs``).
_TRAINED_TASKS: dict[str, tuple[str, str]] = {
    "ensemble": (ENSEMBLE_CHUNK_TASK, ENSEMBLE_AGGREGATE_TASK),
    "partition": (PARTITION_CHUNK_TASK, PARTITION_AGGREGATE_TASK),
}
#: ``(task, args, queue)`` of one message.
Message = tuple[str, list[Any], str]


def _unit(job: Job, name: str, task: str, state: str = "pending", **args: Any) -> WorkUnit:
    return WorkUnit(
        job_id=job.id, name=name, task=task, queue=queue_for(task, job.method), args=args,
        state=state, attempts=0, max_attempts=job.max_attempts,
        enqueued_at=utcnow() if state == "pending" else None,
    )


def plan(job: Job) -> list[WorkUnit]:
    """The units of a new job (its id assigned): one K-NN run or certification, or the
    chunks of ``models_per_task`` models (ensemble members, partition base models: index
    ranges) and, blocked until they are done, the vote."""
    if job.kind == CERTIFY_KIND:
        return [_unit(job, CERTIFY_UNIT, CERTIFY_TASK)]
    if job.method == "knn":
        return [_unit(job, "knn", KNN_TASK)]
    chunk_task, vote_task = _TRAINED_TASKS[job.method]
    n, size = models_to_train(job.method, job.params), job.params["models_per_task"]
    chunks = [
        _unit(job, f"chunk-{start}", chunk_task, start=start, stop=min(start + size, n))
        for start in range(0, n, size)
    ]
    return [*chunks, _unit(job, VOTE, vote_task, state="blocked")]


def message(unit: WorkUnit) -> Message:
    """The broker message that wakes a worker for ``unit``."""
    return unit.task, [unit.job_id, unit.name], unit.queue


def certify_message(unit: WorkUnit, model_id: str, inputs: bytes) -> Message:
    """A certify job's first message: its unit's (:func:`message`) with its model's id and
    its inputs (their npz, base64: small ones only, those kept in the job's row), so that a
    worker with the model hot certifies them before any claim (``workers.tasks``); a message
    sent again (the reaper's) carries neither, and claims."""
    task, args, queue = message(unit)
    return task, [*args, model_id, base64.b64encode(inputs).decode("ascii")], queue


def first_message_id(job_id: str, unit_name: str) -> str:
    """The task id of the message a unit gets when its job is submitted. A worker drops a
    certify job's message unread only when it carries this id and the worker finished that job
    itself, in another job's batch: a message sent later (the reaper's, after a lost lease or a
    success lost with the database, or a retry's) has a fresh id and always claims. A UUID
    derived from both names, as Celery's own ids are UUIDs, naming neither (the worker's log
    lines about a job carry its id as a field)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"rab:first-message:{job_id}/{unit_name}"))


def send(celery: Any, messages: Iterable[Message], first: bool = False) -> None:
    """Send messages (by task name: the sender imports no task code); ``first``: the messages
    of a job's submission (:func:`first_message_id`)."""
    for task, args, queue in messages:
        task_id = first_message_id(args[0], args[1]) if first else None
        celery.send_task(task, args=args, queue=queue, task_id=task_id)


def release_vote(session: Session, job_id: str) -> list[Message]:
    """Queue the vote of an ensemble whose chunks are all done (once); its message."""
    units = session.scalars(select(WorkUnit).where(WorkUnit.job_id == job_id)).all()
    vote = next((u for u in units if u.name == VOTE), None)
    chunks_done = all(u.state == "done" for u in units if u.name != VOTE)
    if vote is None or vote.state != "blocked" or not chunks_done:
        return []
    vote.state, vote.enqueued_at = "pending", utcnow()
    return [message(vote)]


def _lost(session: Session, lease_grace: timedelta, resend_after: timedelta) -> Sequence[WorkUnit]:
    now = utcnow()
    expired = (WorkUnit.state == "running") & (WorkUnit.lease_expires_at < now - lease_grace)
    sibling = aliased(WorkUnit)
    job_is_moving = (
        select(sibling.name)
        .where(sibling.job_id == WorkUnit.job_id, sibling.state == "running",
               sibling.lease_expires_at >= now)
        .exists()
    )
    # a pending unit of a job another unit of which is running waits its turn in the queue;
    # of a job with nothing running, its message may be lost
    unsent = (WorkUnit.state == "pending") & (WorkUnit.enqueued_at < now - resend_after) & (
        ~job_is_moving
    )
    query = (
        select(WorkUnit).join(Job, Job.id == WorkUnit.job_id)
        .where(UNFINISHED, expired | unsent)
        .with_for_update(skip_locked=True, of=WorkUnit)
    )
    return session.scalars(query).all()


def _releasable_votes(session: Session) -> Sequence[WorkUnit]:
    """The blocked votes of unfinished jobs whose every chunk is done, locked (one query for
    all jobs; rows another reaper holds are skipped). The rule of :func:`release_vote`."""
    chunk = aliased(WorkUnit)
    unfinished_chunk = (
        select(chunk.name)
        .where(chunk.job_id == WorkUnit.job_id, chunk.name != VOTE, chunk.state != "done")
        .exists()
    )
    return session.scalars(
        select(WorkUnit).join(Job, Job.id == WorkUnit.job_id)
        .where(WorkUnit.name == VOTE, WorkUnit.state == "blocked",
               UNFINISHED, ~unfinished_chunk)
        .with_for_update(skip_locked=True, of=WorkUnit)
    ).all()


def reap(db: Database, celery: Any, *, resend_after_s: float, lease_grace_s: float = 0.0) -> int:
    """Re-queue the units of expired leases, re-send long-pending ones, release finished
    ensembles' votes; returns the number of messages sent. Safe to run in several processes
    at once (rows are locked, skipping those another reaper holds)."""
    messages: list[Message] = []
    with db.session() as session:
        for unit in _lost(session, timedelta(seconds=lease_grace_s),
                          timedelta(seconds=resend_after_s)):
            if unit.state == "running":
                log.warning("job %s: unit %s lost its worker (lease of %s expired); re-queued",
                            unit.job_id, unit.name, unit.lease_owner)
            unit.state, unit.lease_owner, unit.enqueued_at = "pending", None, utcnow()
            messages.append(message(unit))
        for vote in _releasable_votes(session):
            vote.state, vote.enqueued_at = "pending", utcnow()
            messages.append(message(vote))
    send(celery, messages)
    return len(messages)


def retry(session: Session, job: Job) -> list[Message]:
    """Resume a failed job: its failed (and unfinished) units start over with a fresh attempt
    budget; stored models are kept (a chunk trains only the missing ones)."""
    session.execute(
        update(WorkUnit)
        .where(WorkUnit.job_id == job.id, WorkUnit.state.in_(("failed", "running", "pending")))
        .values(state="pending", attempts=0, lease_owner=None, error=None, enqueued_at=utcnow())
    )
    job.state, job.phase, job.error, job.finished_at = "queued", "queued", None, None
    units = session.scalars(
        select(WorkUnit).where(WorkUnit.job_id == job.id, WorkUnit.state == "pending")
    ).all()
    return [message(u) for u in units] + release_vote(session, job.id)
