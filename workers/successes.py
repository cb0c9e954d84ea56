"""A success as SQL: the jobs still running finished with their summary, their certificates
stored and their units done. On PostgreSQL the success of a certify batch (first attempts,
one summary, nothing else to store, its commit not waiting for the disk) is one statement on
an autocommit connection; otherwise, and on SQLite, the same statements run in turn in one
transaction (``lifecycle.succeed_all``).

Through the ORM a batch's success was four round trips (the jobs' update, the certificates'
insert, the units' update and the commit: 6 ms of a certify request's 30 ms sequentially, 19
ms of a batch of 23 at 32 clients, measured). Composed, the jobs' update returns the ids of
those still running, and the certificates and units of exactly those are written by the same
statement (its data-modifying common table expressions all see the statement's one snapshot,
and each reads its job ids only from what the jobs' update returned). Every statement is
built once, its values all parameters, so that SQLAlchemy compiles it once.

A certify job can also succeed *unclaimed* (:func:`succeed_unclaimed`): a worker that has its
model hot certifies the inputs its first message carries before any claim, and the same
statement, its jobs' update taking only a job no one has touched (queued, no attempt made, its
unit pending, with those inputs and that model), makes that first attempt and its success one
write. Whoever touched the job first (a claim, a cancellation, a concurrent unclaimed success)
leaves it unfinished here, and the result is dropped; one lost in a crash leaves the job queued,
for the reaper to send again (``workers.commits``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Select,
    String,
    Update,
    bindparam,
    column,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from app.orm import Certificate, Job, UTCDateTime, WorkUnit
from workers.commits import lazy_commit

__all__ = ["FINISH_JOBS", "FINISH_JOBS_WITH_MODEL", "FINISH_UNITS", "finished_params",
           "succeed_certify_batch", "succeed_unclaimed"]

_CERTIFICATES, _UNITS = Certificate.__table__, WorkUnit.__table__
#: The certificate columns a success writes (every one: a row without a poison count leaves
#: its three columns NULL).
_CERTIFICATE_COLUMNS = tuple(_CERTIFICATES.columns.keys())
# parameters named as no column: an UPDATE would take such a one for a value to set
_JOB_IDS = bindparam("finished_ids", expanding=True, type_=String)
_UNIT_NAME = bindparam("finished_unit", type_=String)
_FINISHED_AT = bindparam("finished_time", type_=UTCDateTime())


_SUCCEEDED: dict[str, Any] = {
    "state": "succeeded", "phase": "done", "finished_at": _FINISHED_AT,
    "progress_done": Job.progress_total, "summary": bindparam("finished_summary", type_=JSON),
}


def _finish_jobs(with_model: bool) -> Update:
    """Finish the jobs of ``finished_ids`` still running, with ``finished_summary`` (and
    ``finished_model``, the model they made); returns the ids finished."""
    values = dict(_SUCCEEDED)
    if with_model:
        values["model_id"] = bindparam("finished_model", type_=String)
    return (update(Job).where(Job.id.in_(_JOB_IDS), Job.state == "running").values(**values)
            .returning(Job.id))


def _finish_unclaimed() -> Update:
    """Finish the jobs of ``finished_ids`` no one has touched (see the module's docstring)
    whose inputs are ``finished_inputs`` and model ``finished_model``, their first attempt
    made now; returns the ids finished."""
    units = _UNITS
    untouched_unit = (
        select(units.c.job_id)
        .where(units.c.job_id == Job.id, units.c.name == _UNIT_NAME,
               units.c.state == "pending", units.c.attempts == 0)
        .exists()
    )
    return (
        update(Job)
        .where(Job.id.in_(_JOB_IDS), Job.state == "queued", Job.attempts == 0, untouched_unit,
               Job.inputs_sha256 == bindparam("finished_inputs", type_=String),
               Job.model_id == bindparam("finished_model", type_=String))
        .values(**_SUCCEEDED, attempts=1, started_at=_FINISHED_AT)
        .returning(Job.id)
    )


def _finish_units(job_ids: Any, attempted: bool = False) -> Update:
    """Mark the units ``finished_unit`` of the jobs ``job_ids`` done (``attempted``: their
    attempt counted now, an unclaimed success's)."""
    values: dict[str, Any] = {"state": "done", "lease_owner": None}
    if attempted:
        values["attempts"] = WorkUnit.attempts + 1
    return (update(WorkUnit).where(WorkUnit.job_id.in_(job_ids), WorkUnit.name == _UNIT_NAME)
            .values(**values))


FINISH_JOBS, FINISH_JOBS_WITH_MODEL = _finish_jobs(False), _finish_jobs(True)
FINISH_UNITS = _finish_units(_JOB_IDS)


def finished_params(job_ids: Sequence[str], *, summary: dict[str, Any] | None = None,
                    now: datetime | None = None, unit: str | None = None,
                    model_id: str | None = None) -> dict[str, Any]:
    """The parameters of these statements (those a statement has no use for may be left
    out)."""
    return {"finished_ids": sorted(job_ids), "finished_summary": summary,
            "finished_time": now, "finished_unit": unit, "finished_model": model_id}


def _certify_batch(finish: Update, attempted: bool = False) -> Select[Any]:
    """The composed statement (see the module's docstring) with the jobs' update ``finish``
    (``attempted``: it counts their first attempt); selects the ids finished."""
    finished = finish.cte("finished")
    done = select(finished.c.id)
    rows = func.unnest(*(
        bindparam(f"certificate_{name}", type_=ARRAY(_CERTIFICATES.c[name].type))
        for name in _CERTIFICATE_COLUMNS
    )).table_valued(
        *(column(name, _CERTIFICATES.c[name].type) for name in _CERTIFICATE_COLUMNS)
    ).render_derived(name="certificate_rows")
    certificates = insert(Certificate).from_select(
        list(_CERTIFICATE_COLUMNS),
        select(*(rows.c[name] for name in _CERTIFICATE_COLUMNS)).where(rows.c.job_id.in_(done)),
    )
    return select(finished.c.id, *lazy_commit("postgresql")).add_cte(
        _finish_units(done, attempted).cte("units"), certificates.cte("certificates")
    )


_CERTIFY_BATCH = _certify_batch(FINISH_JOBS)
_UNCLAIMED = _certify_batch(_finish_unclaimed(), attempted=True)


def _execute(connection: Connection, statement: Select[Any], params: dict[str, Any],
             certificates: Sequence[dict[str, Any]]) -> set[str]:
    params.update({f"certificate_{name}": [row.get(name) for row in certificates]
                   for name in _CERTIFICATE_COLUMNS})
    result = connection.execution_options(isolation_level="AUTOCOMMIT").execute(
        statement, params)
    return set(result.scalars())


def succeed_certify_batch(connection: Connection, job_ids: Sequence[str],
                          summary: dict[str, Any], unit: str, now: datetime,
                          certificates: Sequence[dict[str, Any]]) -> set[str]:
    """Finish the certify jobs ``job_ids`` still running, with ``summary``, store their
    ``certificates`` (dicts with a ``job_id``) and mark their units ``unit`` done, in one
    autocommit statement (PostgreSQL) whose commit does not wait for the disk
    (``workers.commits``); the ids finished."""
    return _execute(connection, _CERTIFY_BATCH,
                    finished_params(job_ids, summary=summary, now=now, unit=unit), certificates)


def succeed_unclaimed(connection: Connection, job_id: str, unit: str, model_id: str,
                      inputs_sha256: str, summary: dict[str, Any], now: datetime,
                      certificates: Sequence[dict[str, Any]]) -> bool:
    """Finish the certify job ``job_id`` of model ``model_id`` and inputs ``inputs_sha256``
    if no one has touched it (see the module's docstring), as :func:`succeed_certify_batch`
    does a claimed one; whether it did."""
    params = finished_params([job_id], summary=summary, now=now, unit=unit, model_id=model_id)
    params["finished_inputs"] = inputs_sha256
    return bool(_execute(connection, _UNCLAIMED, params, certificates))
