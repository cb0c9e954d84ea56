"""What each queue holds and who consumes it, from the database: the units of work waiting
or running per queue (``work_units``) and the live workers (``worker_presence``, renewed every
``PRESENCE_INTERVAL_S``; a worker silent for ``PRESENCE_TIMEOUT_S`` is gone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.orm import UNFINISHED, Job, WorkerPresence, WorkUnit, utcnow
from contract.api import QueueStatus
from contract.messaging import QUEUES

PRESENCE_INTERVAL_S = 5.0
PRESENCE_TIMEOUT_S = 3 * PRESENCE_INTERVAL_S


def live_consumers(session: Session, now: datetime | None = None) -> dict[str, int]:
    """Live workers per queue."""
    since = (now or utcnow()) - timedelta(seconds=PRESENCE_TIMEOUT_S)
    counts = dict.fromkeys(QUEUES, 0)
    for (queues,) in session.execute(
        select(WorkerPresence.queues).where(WorkerPresence.last_seen >= since)
    ):
        for queue in queues:
            counts[queue] = counts.get(queue, 0) + 1
    return counts


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes from aggregates."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def queue_states(session: Session) -> list[QueueStatus]:
    """The state of every queue of the deployment (and of any other that holds work)."""
    now = utcnow()
    consumers = live_consumers(session, now)
    unfinished = (Job.id == WorkUnit.job_id) & UNFINISHED
    counts: dict[tuple[str, str], int] = {
        (queue, state): n
        for queue, state, n in session.execute(
            select(WorkUnit.queue, WorkUnit.state, func.count()).join(Job, unfinished)
            .where(WorkUnit.state.in_(("pending", "running")))
            .group_by(WorkUnit.queue, WorkUnit.state)
        )
    }
    oldest = dict(session.execute(
        select(WorkUnit.queue, func.min(WorkUnit.enqueued_at)).join(Job, unfinished)
        .where(WorkUnit.state == "pending").group_by(WorkUnit.queue)
    ).all())
    expired = dict(session.execute(
        select(WorkUnit.queue, func.count()).join(Job, unfinished)
        .where(WorkUnit.state == "running", WorkUnit.lease_expires_at < now)
        .group_by(WorkUnit.queue)
    ).all())
    names = sorted({*consumers, *(queue for queue, _ in counts)})
    states = []
    for queue in names:
        waiting_since = oldest.get(queue)
        states.append(QueueStatus(
            queue=queue, consumers=consumers.get(queue, 0),
            pending=counts.get((queue, "pending"), 0), running=counts.get((queue, "running"), 0),
            oldest_pending_s=None if waiting_since is None
            else (now - _aware(waiting_since)).total_seconds(),
            expired_leases=expired.get(queue, 0),
        ))
    return states


def unserved(states: list[QueueStatus]) -> list[str]:
    """Queues with work waiting and no live worker to consume it."""
    return [q.queue for q in states if q.pending and not q.consumers]


def starved_queues(session: Session, job_id: str) -> list[str]:
    """The queues where units of this job wait that no live worker consumes."""
    waiting = set(session.scalars(
        select(WorkUnit.queue).where(WorkUnit.job_id == job_id, WorkUnit.state == "pending")
    ))
    consumers = live_consumers(session)
    return sorted(q for q in waiting if not consumers.get(q))
