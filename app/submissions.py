"""A new job of one unit (a certify job) in one statement, within the key's job quota
(PostgreSQL).

The online path submits a certify job per request. Through the ORM that was four round
trips in one transaction, each with the unit of work's bookkeeping: the quota's count
(``app.quotas``), the job's insert, the units' insert and the commit. On PostgreSQL one
statement does it all: a data-modifying common table expression counts the key's unfinished
jobs, inserts the job only if one more stays within the quota, and inserts its unit with
it, on an autocommit connection, so its own commit, durable, comes with that one round trip.
The same statement finds, and locks until that commit, a certify job of the same model that
waits for a worker or is being certified, if any: then the new job needs no message of its
own (``app.certify_queue``).
The rows are the ORM's own objects (``Job``, ``app.units.plan``), so every column's value
and default has its one definition; only how they are written differs. SQLite (the embedded
default) has no data-modifying CTE and keeps the ORM's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state

from app import quotas
from app.certify_queue import COVER
from app.orm import Job, WorkUnit

#: The columns a submission writes, besides those left to their defaults (state, phase,
#: progress_done, attempts, created_at: the ORM's defaults, rendered into the statement).
_JOB_COLUMNS = (
    "id", "owner_id", "kind", "dataset_id", "model_id", "method", "params", "attack",
    "inputs_sha256", "inputs_inline", "progress_total", "max_attempts", "request_sha256",
)
_UNIT_COLUMNS = (
    "name", "task", "queue", "args", "state", "attempts", "max_attempts", "enqueued_at",
)


def _insert_within_quota() -> Select[Any]:
    """(unfinished, inserted, covered): the key's unfinished jobs before the submission,
    whether the job and its unit were inserted (only when one more job stays within
    ``limit``), and whether a certify job of its model covers it (waits for a worker or is
    being certified; the oldest no other transaction holds, locked ``FOR SHARE`` until the
    commit: ``app.certify_queue``)."""
    table, unit_table = Job.__table__, WorkUnit.__table__
    count = quotas.unfinished_jobs_of(bindparam("owner_id")).cte("quota")
    job = (
        insert(Job)
        .from_select(
            list(_JOB_COLUMNS),
            select(*(bindparam(f"job_{c}", type_=table.c[c].type) for c in _JOB_COLUMNS))
            .select_from(count).where(count.c.unfinished < bindparam("limit")),
        )
        .returning(Job.id)
        .cte("job")
    )
    unit = (
        insert(WorkUnit)
        .from_select(
            ["job_id", *_UNIT_COLUMNS],
            select(job.c.id, *(bindparam(f"unit_{c}", type_=unit_table.c[c].type)
                               for c in _UNIT_COLUMNS)),
        )
        .returning(WorkUnit.job_id)
        .cte("unit")
    )
    inserted = select(func.count()).select_from(unit).scalar_subquery()
    # never waits for a row another holds (a claim's, a success's): a submission that held
    # one row and waited for another could deadlock with them; with every covering row
    # locked elsewhere, the job sends its own message
    cover = COVER.cte("cover")
    covered = select(cover.c.id).exists()
    return select(count.c.unfinished, inserted.label("inserted"),
                  covered.label("covered")).select_from(count)


_SUBMIT = _insert_within_quota()


def available(db: Session) -> bool:
    """Whether the session's database takes the one-statement submission."""
    return db.get_bind().dialect.name == "postgresql"


def submit_within_quota(db: Session, job: Job, units: Sequence[WorkUnit], limit: int) -> bool:
    """Insert ``job`` (transient, its id set) with its one unit in one durable autocommit
    statement, or raise the quota's 429 and insert nothing. True when the job needs no
    message: a certify job of its model was waiting for a worker, or being certified, as it
    was committed."""
    if len(units) != 1:
        raise ValueError("the one-statement submission writes jobs of one unit")
    params = {**_values(job, _JOB_COLUMNS, "job_"),
              **_values(units[0], _UNIT_COLUMNS, "unit_", implied=("job_id",))}
    params.update(owner_id=job.owner_id, limit=limit, waiting_model=job.model_id)
    connection: Connection
    with db.get_bind().connect() as connection:  # type: ignore[union-attr]
        row = connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            _SUBMIT, params
        ).one()
    if not row.inserted:
        raise quotas.jobs_refused(row.unfinished, limit)
    return bool(row.covered)


def _values(row: Job | WorkUnit, columns: tuple[str, ...], prefix: str,
            implied: tuple[str, ...] = ()) -> dict[str, Any]:
    """The row's values of ``columns`` as parameters; a value set on any other column but the
    ``implied`` ones (a column added to the model but not to the statement) is an error, not a
    silent loss."""
    given = set(instance_state(row).dict) & set(type(row).__table__.columns.keys())
    unwritten = given - set(columns) - set(implied)
    if unwritten:
        raise ValueError(f"the one-statement submission writes no {sorted(unwritten)}")
    return {f"{prefix}{c}": getattr(row, c) for c in columns}
