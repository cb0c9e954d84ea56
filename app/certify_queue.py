"""The certify jobs of a model that wait for a worker, and which of them needs a message.

A certify job *waits* while its job is unfinished and its one unit (``CERTIFY_UNIT``) is
pending with attempts left (:func:`waiting_for_worker`). Concurrent certify requests for one
model are certified together (``workers.claims``), so one message per burst of them is
enough, not one per request: a submission that finds another certify job of its model
waiting, or being certified, sends no message, and a worker that certified a batch claims the
model's waiting jobs again until none waits (``workers.tasks``). At 32 clients the
per-request messages were about a third of the worker's time (its main loop's fetch,
acknowledgement and bookkeeping of each, measured with py-spy) and held the next batch back
behind the last one's.

Why no waiting job is left without a worker (PostgreSQL; SQLite, the embedded default, has no
row locks and keeps one message per job):

- The submission's statement locks the oldest certify job of its model that waits for a
  worker or is being certified (:func:`covering`) and that no other transaction holds (its
  job and unit rows, ``FOR SHARE SKIP LOCKED``: :data:`COVER`, in ``app.submissions``) until
  it commits, and sends a message only when it finds none. So that job, the *cover*, is in
  the same state when the new job is committed: a claim of a waiting cover (``FOR UPDATE``),
  the success of a running one (an update of its rows) or a cancellation waits for that
  commit, and a claim that skips locked rows passes it by. The submission itself never waits
  for a lock (one that held a row and waited for another deadlocked with a batch's success,
  seen).
- A worker claims on a message; after each batch (its success committed), and after a
  message that found its job not to run, it reads the oldest waiting job of the model (a
  statement of its own, so it sees every commit before it) and claims that one (waiting, if
  need be, for a submission that holds it), and so on; it stops only when that read finds
  none waiting.
- So whoever claims, finishes or cancels a cover does it after the covered job's commit,
  and the worker's next read sees the covered job; a worker that stops has seen none waiting
  after every commit it could have missed. Under load nearly every request finds a cover (the
  batch being certified, or one waiting): one message per idle spell of the worker, not one
  per batch. A worker that dies leaves its claimed jobs to expire and the waiting ones
  pending: the reaper sends both again (``app.units.reap``), and the claim of a re-queued
  job reads the model's waiting ones after it.
- A lone request's message may reach a worker before its job is committed (``app.ahead``):
  the worker looks for the job until that message's wait is over, and the API sends the
  message again after a slower commit, so to this argument the job's message comes after
  its commit; a covered job whose message went ahead has one more than it needs, harmless
  as every duplicate is.
- A worker keeps to one model at most ``RAB_CERTIFY_SERVE_S``; it then sends one message for
  the oldest waiting job and takes the other messages before it (no model starves another).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, select

from app.orm import UNFINISHED, Job, WorkUnit

__all__ = ["CERTIFY_KIND", "CERTIFY_UNIT", "COVER", "EXHAUSTED", "OLDEST_WAITING", "covering",
           "oldest_waiting", "waiting_for_worker"]

CERTIFY_KIND = "certify"
#: The name of a certify job's one unit (``app.units.plan``).
CERTIFY_UNIT = "certify"
_JOBS, _UNITS = Job.__table__, WorkUnit.__table__
#: A unit with no attempt left: claimed once more, it gives up.
EXHAUSTED = _UNITS.c.attempts >= _UNITS.c.max_attempts
#: The join of a job and its units, the one every statement here reads.
JOB_UNITS = _JOBS.join(_UNITS, _UNITS.c.job_id == _JOBS.c.id)


def _certify_job_of(model_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """The rows of :data:`JOB_UNITS` that are an unfinished certify job of ``model_id`` and
    its unit."""
    return ((_JOBS.c.kind == CERTIFY_KIND) & (_JOBS.c.model_id == model_id) & UNFINISHED
            & (_UNITS.c.name == CERTIFY_UNIT))


_WAITS = (_UNITS.c.state == "pending") & ~EXHAUSTED


def waiting_for_worker(model_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """The rows of :data:`JOB_UNITS` that are a certify job of ``model_id`` waiting for a
    worker (see the module's docstring)."""
    return _certify_job_of(model_id) & _WAITS


def covering(model_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """The rows of :data:`JOB_UNITS` that are a certify job of ``model_id`` waiting for a
    worker or being certified (its unit running): either makes a worker read the model's
    waiting jobs after it is claimed, or certified (see the module's docstring)."""
    return _certify_job_of(model_id) & (_WAITS | (_UNITS.c.state == "running"))


#: A certify job of ``waiting_model`` that covers a new one (:func:`covering`), oldest first,
#: locked ``FOR SHARE``, skipping rows another transaction holds.
COVER = (
    select(_JOBS.c.id).select_from(JOB_UNITS).where(covering(bindparam("waiting_model")))
    .order_by(_JOBS.c.created_at).limit(1)
    .with_for_update(read=True, skip_locked=True)
)


def _oldest_waiting() -> Select[Any]:
    return (
        select(_JOBS.c.id, _UNITS.c.task, _UNITS.c.queue).select_from(JOB_UNITS)
        .where(waiting_for_worker(bindparam("waiting_model")))
        .order_by(_JOBS.c.created_at)  # as ix_jobs_unfinished_model is
        .limit(1)
    )


#: The oldest certify job of ``waiting_model`` waiting for a worker: its id and its unit's
#: task and queue (its message's).
OLDEST_WAITING = _oldest_waiting()


def oldest_waiting(model_id: str) -> Select[Any]:
    """:data:`OLDEST_WAITING` for ``model_id``, its value bound."""
    return OLDEST_WAITING.params(waiting_model=model_id)
