"""Job-row and unit-row transitions done by workers: claim a unit under a lease, renew it,
report progress, finish, fail; and patience with a database that is away for a while.

The rows are the source of truth (``app.units``): a worker claims a unit only when it is
pending or its lease expired, so a duplicate or redelivered message does nothing while the
unit's worker lives, and takes the unit over when it does not. Every claim counts an attempt
of that unit; after ``max_attempts`` the job fails instead of looping.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from app import certify_queue
from app.certify_queue import CERTIFY_UNIT
from app.db import Database
from app.orm import Certificate, Job, ModelMember, WorkUnit, utcnow
from app.replies import publish_job
from app.units import Message, release_vote
from workers import claims, successes
from workers.commits import lazy_commit

log = logging.getLogger(__name__)
AGGREGATING = "aggregating"  # phase prefix while the ensemble votes
#: Errors of a database that is unreachable for now: back off and try again.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)
#: How long a worker keeps retrying a database that went away before it lets its lease expire.
DB_PATIENCE_S = 120.0
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
T = TypeVar("T")


class JobCancelledError(Exception):
    """The job was cancelled (or finished elsewhere) while this worker ran it."""


@dataclass(frozen=True)
class Claim:
    """What a worker needs to run one unit of a job (ids and plain values, no ORM objects)."""

    job_id: str
    unit: str
    args: dict[str, Any]
    kind: str
    owner_id: str
    dataset_id: str | None
    model_id: str | None
    method: str
    params: dict[str, Any]
    attack: dict[str, Any] | None
    inputs_sha256: str | None
    attempt: int
    lease_owner: str
    inputs_inline: bytes | None = None  # a certify job's small inputs, from its row
    batch: tuple[Claim, ...] = ()  # other certify jobs claimed with this one (same model)


def patiently(action: Callable[..., T], *args: Any, patience_s: float = DB_PATIENCE_S) -> T:
    """``action(*args)``, retried with exponential backoff (0.5 s doubling up to 10 s) while
    the database is unreachable, for at most ``patience_s``; then the error propagates."""
    deadline, delay = time.monotonic() + patience_s, 0.5
    while True:
        try:
            return action(*args)
        except TRANSIENT_DB_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable (%s); retrying in %.1f s", type(exc).__name__,
                        delay)
            time.sleep(delay)
            delay = min(2 * delay, 10.0)


def claim(db: Database, job_id: str, unit_name: str, lease_s: float,
          owner: str = WORKER_ID, batch_inputs: int = 0) -> Claim | None:
    """Take the unit's lease for ``lease_s``; None when there is nothing to run (job over,
    unit done or blocked, or held by a live lease, or the unit used up its attempts: then
    the job fails; its waiters are told).

    ``batch_inputs`` > 0, for a certify job: also claim other certify jobs of the same model
    waiting for a worker, as many as fit in ``batch_inputs`` inputs with this job's own
    (``Claim.batch``), each under a lease exactly as this one; the rules and the statements
    are :mod:`workers.claims`'."""
    now = utcnow()
    with db.engine.connect() as connection:
        written = claims.claim_rows(connection, job_id, unit_name, now,
                                    now + timedelta(seconds=lease_s), owner, batch_inputs)
        connection.commit()
    if written.gave_up:
        publish_job(db.settings, written.gave_up[0], "failed", *written.gave_up[1:])
    if not written.claimed:
        return None
    first, *batch = (_claim_of(job, unit, owner) for job, unit in written.claimed)
    return replace(first, batch=tuple(batch))


def _claim_of(job: Any, unit: Any, owner: str) -> Claim:
    """The claim of a job and its unit, from the rows the claim returned."""
    return Claim(
        job_id=job.id, unit=unit.name, args=dict(unit.args), kind=job.kind,
        owner_id=job.owner_id, dataset_id=job.dataset_id, model_id=job.model_id,
        method=job.method, params=dict(job.params),
        attack=None if job.attack is None else dict(job.attack),
        inputs_sha256=job.inputs_sha256, attempt=unit.attempts, lease_owner=owner,
        inputs_inline=job.inputs_inline,
    )


def renew(db: Database, claim: Claim, lease_s: float) -> bool:
    """Extend the claim's lease; False when it is no longer this worker's."""
    with db.session() as session:
        result = session.execute(
            update(WorkUnit)
            .where(WorkUnit.job_id == claim.job_id, WorkUnit.name == claim.unit,
                   WorkUnit.state == "running", WorkUnit.lease_owner == claim.lease_owner)
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


class _Beats:
    """The leases this process renews: one daemon thread (started on first use, and again in a
    forked child, which inherits no threads) renews each registered set of claims every
    third of its ``lease_s``; a failed renewal, e.g. the database away, is retried at the next
    beat."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._due: dict[int, tuple[float, Database, tuple[Claim, ...], float]] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, key: int, db: Database, claims: tuple[Claim, ...], lease_s: float) -> None:
        with self._changed:
            due = time.monotonic() + lease_s / 3
            sooner = all(due < at for at, *_ in self._due.values())
            self._due[key] = (due, db, claims, lease_s)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._beat, name="lease-heartbeat",
                                                daemon=True)
                self._thread.start()
            elif sooner:  # else the thread's wait ends before this set is due anyway
                self._changed.notify()

    def remove(self, key: int) -> None:
        with self._changed:
            self._due.pop(key, None)

    def _beat(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                due = [key for key, (at, *_) in self._due.items() if at <= now]
                if not due:
                    nearest = min((at for at, *_ in self._due.values()), default=now + 60)
                    self._changed.wait(nearest - now)
                    continue
                beats = [(key, *self._due[key][1:]) for key in due]
                for key, db, claims, lease_s in beats:
                    self._due[key] = (now + lease_s / 3, db, claims, lease_s)
            for key, db, claims, lease_s in beats:
                for claim in claims:
                    try:
                        renewed = renew(db, claim, lease_s)
                    except Exception as exc:  # the next beat tries again
                        log.warning("job %s: lease renewal failed: %s", claim.job_id, exc)
                        continue
                    if not renewed and key in self._due:  # not merely its unit just ended
                        log.warning("job %s: unit %s lease taken over", claim.job_id,
                                    claim.unit)


_BEATS = _Beats()


class Heartbeat:
    """Renews the leases of ``claims`` every third of ``lease_s`` while their units run, from
    this process's one heartbeat thread: entering and leaving start no thread (a thread's start
    waits for the scheduler, measured at about 3 ms per certify job on the loaded 2-core
    machine)."""

    def __init__(self, db: Database, claims: Iterable[Claim], lease_s: float) -> None:
        self._db, self._claims, self._lease_s = db, tuple(claims), lease_s

    def __enter__(self) -> Heartbeat:
        _BEATS.add(id(self), self._db, self._claims, self._lease_s)
        return self

    def __exit__(self, *_: object) -> None:
        _BEATS.remove(id(self))


def _first_row(db: Database, statement: Any) -> Any:
    """The first row of a read, in a statement of its own (autocommit: no transaction round
    trips, and it sees every commit before it); None when there is none."""
    with db.engine.connect() as connection:
        return connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            statement).first()


def oldest_waiting(db: Database, model_id: str) -> Message | None:
    """The message for the oldest certify job of ``model_id`` that waits for a worker
    (``app.certify_queue``), None when none waits."""
    row = _first_row(db, certify_queue.oldest_waiting(model_id))
    return None if row is None else (row.task, [row.id, CERTIFY_UNIT], row.queue)


def model_of(db: Database, job_id: str) -> str | None:
    """The model a certify job certifies with (None for another job, or none such)."""
    row = _first_row(db, select(Job.model_id).where(Job.id == job_id))
    return None if row is None else row.model_id


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


def fail(db: Database, claim: Claim, message: str) -> None:
    """Mark the unit and its running job failed with ``message``."""
    with db.session() as session:
        session.execute(
            update(WorkUnit).where(WorkUnit.job_id == claim.job_id, WorkUnit.name == claim.unit)
            .values(state="failed", error=message[:4000], lease_owner=None)
        )
        session.execute(
            update(Job)
            .where(Job.id == claim.job_id, Job.state == "running")
            .values(state="failed", phase="failed", error=message[:4000], finished_at=utcnow())
        )
    publish_job(db.settings, claim.job_id, "failed")


def finish_chunk(db: Database, claim: Claim) -> list[Message]:
    """Mark a chunk of ensemble members done; the vote's message once every chunk is."""
    with db.session() as session:
        job = session.get(Job, claim.job_id, with_for_update=True)
        if job is None or job.state != "running":
            raise JobCancelledError(claim.job_id)
        session.execute(successes.FINISH_UNITS,
                        successes.finished_params([claim.job_id], unit=claim.unit))
        session.flush()
        return release_vote(session, claim.job_id)


def succeed(
    db: Database,
    claim: Claim,
    certificates: Iterable[dict[str, Any]],
    summary: dict[str, Any],
    extra_rows: Iterable[object] = (),
    model_id: str | None = None,
) -> None:
    """Store the certificates (replacing any from an earlier attempt), finish the unit and the
    job. One transaction: either everything is visible and the job succeeded, or nothing is."""
    if succeed_all(db, [(claim, certificates, summary)], extra_rows, model_id):
        raise JobCancelledError(claim.job_id)


def succeed_all(
    db: Database,
    outcomes: Sequence[tuple[Claim, Iterable[dict[str, Any]], dict[str, Any]]],
    extra_rows: Iterable[object] = (),
    model_id: str | None = None,
    durable: bool = True,
) -> list[Claim]:
    """:func:`succeed` for several jobs at once (a batch of certify jobs), each with its own
    certificates and summary, in one transaction: one durable commit for the batch instead of
    one per job. The jobs no longer running (cancelled meanwhile) are skipped and returned;
    the others' waiters are told once it is committed. ``durable=False`` (certify jobs only:
    their results can be computed again: ``workers.commits``) does not wait for the
    disk."""
    claimed = {claim.job_id: claim for claim, _, _ in outcomes}
    by_summary: dict[str, tuple[dict[str, Any], list[str]]] = {}  # a batch shares one
    units: dict[str, list[str]] = {}
    for claim, _, summary in outcomes:
        key = json.dumps(summary, sort_keys=True)
        by_summary.setdefault(key, (summary, []))[1].append(claim.job_id)
        units.setdefault(claim.unit, []).append(claim.job_id)
    rows = [{"job_id": claim.job_id, **c} for claim, certificates, _ in outcomes
            for c in certificates]
    extra, dialect, now = list(extra_rows), db.engine.dialect.name, utcnow()
    if (dialect == "postgresql" and not durable and not extra and model_id is None
            and len(by_summary) == len(units) == 1
            and all(c.attempt == 1 for c in claimed.values())):  # a certify batch
        ((summary, job_ids),), (unit,) = by_summary.values(), units
        with db.engine.connect() as connection:  # one statement (workers.successes)
            ids = successes.succeed_certify_batch(connection, job_ids, summary, unit, now, rows)
    else:
        lazy = () if durable else lazy_commit(dialect)
        finish = successes.FINISH_JOBS if model_id is None else successes.FINISH_JOBS_WITH_MODEL
        with db.session() as session:
            ids = set()
            for summary, job_ids in by_summary.values():  # the running ones, locked, finished
                ids.update(session.scalars(finish.returning(*lazy), successes.finished_params(
                    job_ids, summary=summary, now=now, model_id=model_id)))
            if any(claimed[job_id].attempt > 1 for job_id in ids):  # an earlier attempt's
                session.execute(delete(Certificate).where(Certificate.job_id.in_(sorted(ids))))
            if rows := [row for row in rows if row["job_id"] in ids]:
                session.execute(insert(Certificate), rows)
            if ids:
                session.add_all(extra)
            for name, job_ids in units.items():
                session.execute(successes.FINISH_UNITS, successes.finished_params(
                    [j for j in job_ids if j in ids], unit=name))
    done = [outcome for outcome in outcomes if outcome[0].job_id in ids]
    if done:  # committed: a woken waiter finds it (a certify job's, its rows in the signal)
        first, *more = (claim.job_id for claim, _, _ in done)
        publish_job(db.settings, first, "succeeded", *more, certificates=_by_job(rows))
    return [claim for job_id, claim in claimed.items() if job_id not in ids]


def succeed_unclaimed(db: Database, job_id: str, unit: str, model_id: str, inputs_sha256: str,
                      certificates: Iterable[dict[str, Any]], summary: dict[str, Any]) -> bool:
    """The success of a certify job no one has claimed (PostgreSQL; the rules are
    :func:`workers.successes.succeed_unclaimed`'s), its waiter told with its certificates;
    whether it was this one's (else the job is someone else's to finish: drop the result)."""
    if db.engine.dialect.name != "postgresql":  # SQLite: claimed, always
        return False
    rows = [{"job_id": job_id, **c} for c in certificates]
    with db.engine.connect() as connection:
        done = successes.succeed_unclaimed(connection, job_id, unit, model_id, inputs_sha256,
                                           summary, utcnow(), rows)
    if done:
        publish_job(db.settings, job_id, "succeeded", certificates={job_id: rows})
    return done


def _by_job(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Certificate rows grouped by their job, in order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["job_id"], []).append(row)
    return grouped


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
