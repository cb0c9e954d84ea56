"""GET /v1/queues: the work waiting on each queue and whether a worker consumes it."""

from __future__ import annotations

from fastapi import APIRouter

import contract.api as wire
from app.deps import DB, Owner
from app.queues import queue_states

router = APIRouter(prefix="/v1/queues", tags=["operations"])


@router.get("", response_model=list[wire.QueueStatus])
def list_queues(_owner: Owner, db: DB) -> list[wire.QueueStatus]:
    """Every queue of the deployment: consumers, pending and running units, the oldest wait
    and expired leases (counts only: no host names, no other key's jobs)."""
    return queue_states(db)
