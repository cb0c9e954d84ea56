"""A unit's claim as SQL statements: composed into one statement on PostgreSQL, run in turn on
SQLite (which has no data-modifying common table expression).

Every rule of a claim is one SQL expression here, used by both forms:

- a unit is *claimable* when its job is unfinished and the unit is pending, or running under
  a lease that expired (a live lease means its worker still runs it);
- a claimable unit that used up its ``max_attempts`` *gives up*: the unit and its job fail,
  each attempt counted, with :data:`GAVE_UP`'s message;
- otherwise the claim takes the lease (``RAB_LEASE_S``), counts an attempt of the unit and of
  the job, and moves a queued job to running in its first phase (``training models`` for a
  trained method, else ``starting``);
- a certify job's claim takes with it other certify jobs of the same model that wait for a
  worker (``app.certify_queue.waiting_for_worker``), oldest first: among those that fit alone
  in the room left by its own inputs (``batch_inputs``), the longest run whose inputs fit
  together. Rows another transaction holds are skipped (``FOR UPDATE SKIP LOCKED``), so two
  workers never take the same job, and a batched job's own message, if it has one, delivered
  later, finds its unit taken.

On PostgreSQL the claim was five round trips through the ORM (two locking reads, two updates
and the commit: 5 ms of a certify request's 30 ms sequentially, 17 ms of a batch of 23 at 32
clients, measured); composed, it is one statement on an autocommit connection whose commit
does not wait for the disk (``workers.commits``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    String,
    Update,
    bindparam,
    case,
    cast,
    func,
    literal,
    select,
    true,
    union_all,
    update,
)

from app.certify_queue import CERTIFY_KIND, EXHAUSTED, JOB_UNITS, waiting_for_worker
from app.orm import UNFINISHED, Job, UTCDateTime, WorkUnit
from contract.jobs import TRAINED_METHODS
from workers.commits import lazy_commit

__all__ = ["ClaimedRows", "claim_rows", "waiting_certify_jobs"]

_JOBS, _UNITS = Job.__table__, WorkUnit.__table__
# parameters named as no column: an UPDATE would take such a one for a value to set
_JOB_ID, _UNIT = bindparam("claim_job", type_=String), bindparam("claim_unit", type_=String)
_NOW = bindparam("claim_now", type_=UTCDateTime())
_EXPIRES = bindparam("lease_until", type_=UTCDateTime())
_OWNER = bindparam("claimant", type_=String)
_BATCH_INPUTS = bindparam("batch_inputs", type_=Integer)
_IDS = bindparam("claim_ids", expanding=True, type_=String)  # the jobs a statement in turn takes

#: A claimable unit (see the module's docstring).
CLAIMABLE = UNFINISHED & _UNITS.c.state.in_(("pending", "running")) & ~(
    (_UNITS.c.state == "running") & _UNITS.c.lease_expires_at.is_not(None)
    & (_UNITS.c.lease_expires_at > _NOW)
)
#: The error of a unit that gave up, and of its job.
GAVE_UP = (
    literal("unit ", String) + _UNITS.c.name + " gave up after "
    + cast(_UNITS.c.max_attempts, String) + " attempts (its worker was lost each time)"
)
_FIRST_PHASE = case((_JOBS.c.method.in_(TRAINED_METHODS), "training models"), else_="starting")
_CLAIM_JOB_COLUMNS = (
    _JOBS.c.id, _JOBS.c.kind, _JOBS.c.owner_id, _JOBS.c.dataset_id, _JOBS.c.model_id,
    _JOBS.c.method, _JOBS.c.params, _JOBS.c.attack, _JOBS.c.inputs_sha256,
    _JOBS.c.inputs_inline, _JOBS.c.created_at,
)
_CLAIM_UNIT_COLUMNS = (_UNITS.c.job_id, _UNITS.c.name, _UNITS.c.args, _UNITS.c.attempts)


@dataclass(frozen=True)
class ClaimedRows:
    """What a claim wrote: each claimed job's row and its unit's (the asked-for job first,
    then its batch, oldest first) and the ids of the jobs that gave up."""

    claimed: Sequence[tuple[Any, Any]]
    gave_up: Sequence[str]


def _first() -> Select[Any]:
    """The asked-for job and unit, locked, with the claim's verdict on them."""
    return (
        select(_JOBS.c.id, _JOBS.c.kind, _JOBS.c.model_id, _JOBS.c.progress_total,
               CLAIMABLE.label("claimable"), EXHAUSTED.label("exhausted"))
        .select_from(JOB_UNITS)
        .where(_JOBS.c.id == _JOB_ID, _UNITS.c.name == _UNIT)
        .with_for_update()
    )


def _siblings(model_id: ColumnElement[Any], room: ColumnElement[int]) -> Select[Any]:
    """The ids of the waiting certify jobs of ``model_id`` a claim takes along within ``room``
    inputs (see the module's docstring), locked, skipping rows held elsewhere."""
    waiting = (
        select(_JOBS.c.id, _JOBS.c.progress_total, _JOBS.c.created_at)
        .select_from(JOB_UNITS)
        .where(waiting_for_worker(model_id), _JOBS.c.id != _JOB_ID,
               _JOBS.c.progress_total <= room)
        .order_by(_JOBS.c.created_at)  # as ix_jobs_unfinished_model is
        .limit(case((room > 0, room), else_=0))  # each has an input at least
        .with_for_update(skip_locked=True)
        .cte("waiting")
    )
    running_total = func.sum(waiting.c.progress_total).over(
        order_by=(waiting.c.created_at, waiting.c.id))
    ranked = select(waiting, running_total.label("total")).subquery("ranked")
    return (select(ranked.c.id).where(ranked.c.total <= room)
            .order_by(ranked.c.created_at, ranked.c.id))


_SIBLINGS = _siblings(bindparam("batch_model", type_=String),
                      bindparam("batch_room", type_=Integer))


def waiting_certify_jobs(model_id: str, besides: str, unit: str, room: int) -> Select[Any]:
    """The ids of the certify jobs a claim of ``besides`` takes along (see
    :func:`_siblings`), as a statement of its own, every value bound."""
    return _SIBLINGS.params(batch_model=model_id, batch_room=room, claim_job=besides,
                            claim_unit=unit)


def _take_units(job_ids: Any) -> Update:
    return (
        update(WorkUnit).where(_UNITS.c.job_id.in_(job_ids), _UNITS.c.name == _UNIT)
        .values(state="running", attempts=_UNITS.c.attempts + 1, lease_owner=_OWNER,
                lease_expires_at=_EXPIRES)
        .returning(*_CLAIM_UNIT_COLUMNS)
    )


def _take_jobs(job_ids: Any) -> Update:
    queued = _JOBS.c.state == "queued"
    return (
        update(Job).where(_JOBS.c.id.in_(job_ids))
        .values(attempts=_JOBS.c.attempts + 1, state=case((queued, "running"), else_=_JOBS.c.state),
                phase=case((queued, _FIRST_PHASE), else_=_JOBS.c.phase),
                started_at=func.coalesce(_JOBS.c.started_at, _NOW))
        .returning(*_CLAIM_JOB_COLUMNS)
    )


def _give_up_units(job_ids: Any) -> Update:
    return (
        update(WorkUnit).where(_UNITS.c.job_id.in_(job_ids), _UNITS.c.name == _UNIT)
        .values(state="failed", attempts=_UNITS.c.attempts + 1, error=GAVE_UP)
        .returning(_UNITS.c.job_id)
    )


def _give_up_jobs(job_ids: Any) -> Update:
    message = select(GAVE_UP).where(_UNITS.c.job_id == _JOBS.c.id, _UNITS.c.name == _UNIT)
    return (
        update(Job).where(_JOBS.c.id.in_(job_ids))
        .values(state="failed", phase="failed", attempts=_JOBS.c.attempts + 1,
                error=message.scalar_subquery(), finished_at=_NOW)
        .returning(_JOBS.c.id)
    )


def _composed() -> Select[Any]:
    """The whole claim as one statement (PostgreSQL): one row per claimed job, with its unit's
    columns (none claimed: one row of NULLs), each with the ids of the jobs that gave up."""
    first = _first().cte("first")
    opened = first.c.claimable & ~first.c.exhausted
    certify = (select(first.c.model_id).where(opened, first.c.kind == CERTIFY_KIND)
               .scalar_subquery())
    room = _BATCH_INPUTS - select(first.c.progress_total).scalar_subquery()
    taken = union_all(select(first.c.id).where(opened), _siblings(certify, room)).cte("taken")
    units = _take_units(select(taken.c.id)).cte("claimed_units")
    jobs = _take_jobs(select(taken.c.id)).cte("claimed_jobs")
    exhausted = select(first.c.id).where(first.c.claimable, first.c.exhausted)
    failed_units = _give_up_units(exhausted).cte("failed_units")
    failed_jobs = _give_up_jobs(exhausted).cte("failed_jobs")
    gave_up = (
        select(func.array_agg(failed_jobs.c.id).label("ids"))
        .select_from(failed_jobs.join(failed_units, failed_units.c.job_id == failed_jobs.c.id))
        .subquery("gave_up")
    )
    claimed = jobs.join(units, units.c.job_id == jobs.c.id)
    return (
        select(gave_up.c.ids, *jobs.c, units.c.name, units.c.args, units.c.attempts,
               *lazy_commit("postgresql"))
        .select_from(gave_up.outerjoin(claimed, true()))
        .order_by((jobs.c.id == _JOB_ID).desc(), jobs.c.created_at, jobs.c.id)
    )


_COMPOSED = _composed()
# the statements in turn (SQLite)
_FIRST, _TAKE_UNITS, _TAKE_JOBS = _first(), _take_units(_IDS), _take_jobs(_IDS)
_GIVE_UP_UNITS, _GIVE_UP_JOBS = _give_up_units(_IDS), _give_up_jobs(_IDS)


def _params(job_id: str, unit: str, now: datetime, expires: datetime, owner: str,
            batch_inputs: int) -> dict[str, Any]:
    return {"claim_job": job_id, "claim_unit": unit, "claim_now": now, "lease_until": expires,
            "claimant": owner, "batch_inputs": batch_inputs}


def claim_rows(connection: Connection, job_id: str, unit: str, now: datetime,
               expires: datetime, owner: str, batch_inputs: int) -> ClaimedRows:
    """Claim ``unit`` of ``job_id`` (with its batch when ``batch_inputs`` > 0, a certify job)
    for ``owner`` until ``expires``, on ``connection``: one autocommit statement on
    PostgreSQL; on SQLite the statements in turn, in the connection's transaction (the
    caller commits)."""
    params = _params(job_id, unit, now, expires, owner, batch_inputs)
    if connection.dialect.name == "postgresql":
        rows = connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            _COMPOSED, params).all()
        claimed = [(row, row) for row in rows if row.id is not None]
        return ClaimedRows(claimed, rows[0].ids or ())
    first = connection.execute(_FIRST, params).one_or_none()
    if first is None or not first.claimable:
        return ClaimedRows((), ())
    if first.exhausted:
        connection.execute(_GIVE_UP_UNITS, {**params, "claim_ids": [first.id]})
        connection.execute(_GIVE_UP_JOBS, {**params, "claim_ids": [first.id]})
        return ClaimedRows((), (first.id,))
    ids = [first.id]
    if first.kind == CERTIFY_KIND and batch_inputs > first.progress_total:
        ids += connection.scalars(_SIBLINGS, {**params, "batch_model": first.model_id,
                                              "batch_room": batch_inputs - first.progress_total})
    params["claim_ids"] = ids
    units = {row.job_id: row for row in connection.execute(_TAKE_UNITS, params)}
    jobs = {row.id: row for row in connection.execute(_TAKE_JOBS, params)}
    return ClaimedRows([(jobs[i], units[i]) for i in ids], ())
