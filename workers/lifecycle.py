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

from sqlalchemy import ColumnElement, Select, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, undefer

from app.db import Database
from app.orm import UNFINISHED, Certificate, Job, ModelMember, WorkUnit, utcnow
from app.replies import publish_job
from app.units import Message, release_vote
from contract.api import TERMINAL_STATES
from contract.jobs import TRAINED_METHODS

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
    the job fails).

    ``batch_inputs`` > 0, for a certify job: in the same transaction, also claim other
    certify jobs of the same model waiting for a worker (their unit pending), oldest first, as
    many as fit in ``batch_inputs`` inputs with this job's own (``Claim.batch``). Each gets a
    lease exactly as this one does; rows another worker holds are skipped (``FOR UPDATE SKIP
    LOCKED``), and a batched job's own message, delivered later, finds its unit taken and
    does nothing."""
    gave_up: list[str] = []
    with db.session() as session:
        found = session.execute(
            select(Job, WorkUnit, *_lazy_commit(session)).join(WorkUnit, WorkUnit.job_id == Job.id)
            .where(Job.id == job_id, WorkUnit.name == unit_name)
            .options(undefer(Job.inputs_inline)).with_for_update()
        ).first()
        if found is None:  # nothing written: the commit has nothing to wait for
            return None
        claimed = _take(found[0], found[1], lease_s, owner, gave_up)
        if claimed is not None and claimed.kind == "certify":
            room = batch_inputs - found[0].progress_total  # its own inputs
            if room > 0:
                claimed = replace(claimed, batch=_batch(session, claimed, lease_s, room, owner,
                                                        gave_up))
    if gave_up:
        publish_job(db.settings, gave_up[0], "failed", *gave_up[1:])
    return claimed


def _lazy_commit(session: Session) -> tuple[ColumnElement[str], ...]:
    """A column to select (or return) in this transaction's first statement on PostgreSQL that
    lets it commit without waiting for its log to reach the disk: ``set_config`` of
    ``synchronous_commit = off`` for this transaction only, ``SET LOCAL`` as a function, so
    that it needs no round trip of its own; it takes effect once a row is read or written,
    and a transaction that finds no row writes nothing. Nothing on SQLite. (~4 ms saved per
    commit here.)

    For the lease-taking transactions: their row locks alone would make even a claim that
    takes nothing wait for the disk, as every batched sibling's own late message does. A claim
    lost in a database crash only leaves its unit where it was: the work's result is refused
    as that of a job no longer running and the reaper sends the unit again; and the job's final
    transaction, committed durably, makes every earlier one durable with it.

    For the final transaction of a batch of certify jobs (``succeed_all(durable=False)``): a
    certify job's result is a pure function of its stored model and inputs (the job row itself
    was committed durably by the API), so a success lost in a crash leaves the job running
    under an expiring lease; the reaper sends it again and the same certificates replace the
    lost ones. The waiting client, answered already, got exactly those."""
    if session.get_bind().dialect.name != "postgresql":
        return ()
    return (func.set_config("synchronous_commit", "off", True),)


def _take(job: Job, unit: WorkUnit, lease_s: float, owner: str, gave_up: list[str]
          ) -> Claim | None:
    """The claim of ``unit`` (both rows locked by the caller's transaction), or None; a unit
    that used up its attempts fails its job, and the job's id is appended to ``gave_up`` (its
    waiters are told once the transaction is committed)."""
    if job.state in TERMINAL_STATES:
        return None
    now = utcnow()
    live = unit.state == "running" and unit.lease_expires_at is not None and (
        unit.lease_expires_at > now
    )
    if unit.state not in ("pending", "running") or live:
        return None
    unit.attempts += 1
    job.attempts += 1
    if unit.attempts > unit.max_attempts:
        unit.state = "failed"
        unit.error = job.error = (
            f"unit {unit.name} gave up after {unit.max_attempts} attempts (its worker was "
            "lost each time)"
        )
        job.state, job.phase, job.finished_at = "failed", "failed", now
        gave_up.append(job.id)
        return None
    unit.state, unit.lease_owner = "running", owner
    unit.lease_expires_at = now + timedelta(seconds=lease_s)
    if job.state == "queued":
        job.state = "running"
        job.phase = "training models" if job.method in TRAINED_METHODS else "starting"
    job.started_at = job.started_at or now
    return Claim(
        job_id=job.id, unit=unit.name, args=dict(unit.args), kind=job.kind,
        owner_id=job.owner_id, dataset_id=job.dataset_id, model_id=job.model_id,
        method=job.method, params=dict(job.params),
        attack=None if job.attack is None else dict(job.attack),
        inputs_sha256=job.inputs_sha256, attempt=unit.attempts, lease_owner=owner,
        inputs_inline=job.inputs_inline,
    )


def queued_certify_jobs(model_id: str, besides: str, limit: int) -> Select[Job, WorkUnit]:
    """The certify jobs of ``model_id`` but ``besides`` whose unit waits for a worker, oldest
    first, at most ``limit`` (read from ``ix_jobs_unfinished_model``)."""
    return (
        select(Job, WorkUnit).join(WorkUnit, WorkUnit.job_id == Job.id)
        .where(Job.kind == "certify", Job.model_id == model_id, Job.id != besides, UNFINISHED,
               WorkUnit.state == "pending")
        .order_by(Job.created_at).limit(limit)
    )


def _batch(session: Session, first: Claim, lease_s: float, room: int, owner: str,
           gave_up: list[str]) -> tuple[Claim, ...]:
    """The claims of other certify jobs of ``first``'s model waiting for a worker, oldest
    first, as many as fit in ``room`` inputs (see :func:`claim`)."""
    rows = session.execute(
        queued_certify_jobs(str(first.model_id), first.job_id, room)
        .options(undefer(Job.inputs_inline)).with_for_update(skip_locked=True)
    ).all()
    claims: list[Claim] = []
    for job, unit in rows:
        if job.progress_total > room:  # a certify job's total is its number of inputs
            continue
        taken = _take(job, unit, lease_s, owner, gave_up)
        if taken is not None:
            claims.append(taken)
            room -= job.progress_total
    return tuple(claims)


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


def _units_done(session: Session, job_ids: Sequence[str], name: str) -> None:
    session.execute(
        update(WorkUnit).where(WorkUnit.job_id.in_(job_ids), WorkUnit.name == name)
        .values(state="done", lease_owner=None)
    )


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
        _units_done(session, [claim.job_id], claim.unit)
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
    their results can be computed again, see :func:`_lazy_commit`) does not wait for the
    disk."""
    claims = {claim.job_id: claim for claim, _, _ in outcomes}
    by_summary: dict[str, tuple[dict[str, Any], list[str]]] = {}  # a batch shares one
    for claim, _, summary in outcomes:
        key = json.dumps(summary, sort_keys=True)
        by_summary.setdefault(key, (summary, []))[1].append(claim.job_id)
    with db.session() as session:
        lazy = () if durable else _lazy_commit(session)
        finished = {"state": "succeeded", "phase": "done", "finished_at": utcnow(),
                    "progress_done": Job.progress_total}
        if model_id is not None:
            finished["model_id"] = model_id
        ids: set[str] = set()
        for shared, job_ids in by_summary.values():  # the running ones, locked and finished
            ids.update(session.scalars(
                update(Job).where(Job.id.in_(sorted(job_ids)), Job.state == "running")
                .values(summary=shared, **finished).returning(Job.id, *lazy)
            ))
        done = [outcome for outcome in outcomes if outcome[0].job_id in ids]
        if any(claim.attempt > 1 for claim, _, _ in done):  # an earlier attempt's rows
            session.execute(delete(Certificate).where(Certificate.job_id.in_(sorted(ids))))
        rows = [{"job_id": claim.job_id, **c} for claim, certificates, _ in done
                for c in certificates]
        if rows:
            session.execute(insert(Certificate), rows)
        if done:
            session.add_all(extra_rows)
        for name in {claim.unit for claim, _, _ in done}:
            _units_done(session, [c.job_id for c, _, _ in done if c.unit == name], name)
    if done:  # committed: a woken waiter finds it
        first, *more = (claim.job_id for claim, _, _ in done)
        publish_job(db.settings, first, "succeeded", *more)
    return [claim for job_id, claim in claims.items() if job_id not in ids]


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
