"""Per-key quotas: unfinished jobs, models in training (ensemble members, partition base
models), stored dataset bytes.

A request past a quota is refused with 429 and ``Retry-After`` before anything is stored or
queued (jobs finish and free their share; stored data frees it when deleted)."""

from __future__ import annotations

from sqlalchemy import BindParameter, ColumnElement, Select, bindparam, func, select
from sqlalchemy.orm import Session

from app.orm import UNFINISHED, Dataset, Job, StoredObject
from app.problems import ProblemError
from app.settings import Settings
from contract.jobs import TRAINED_METHODS

RETRY_AFTER_S = 30


def _refuse(detail: str) -> ProblemError:
    return ProblemError(429, "Too Many Requests", detail,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


def _unfinished(owner: str | BindParameter[str]) -> tuple[ColumnElement[bool], ...]:
    """The key's unfinished jobs (read from ``ix_jobs_unfinished_owner``)."""
    return Job.owner_id == owner, UNFINISHED


def unfinished_jobs_of(owner: str | BindParameter[str]) -> Select[int]:
    """The count of the key's unfinished jobs, as column ``unfinished``."""
    return select(func.count().label("unfinished")).select_from(Job).where(*_unfinished(owner))


#: :func:`unfinished_jobs_of` a bound ``owner``, built once: it runs at every submission.
_UNFINISHED_COUNT = unfinished_jobs_of(bindparam("owner"))


def jobs_refused(count: int, limit: int) -> ProblemError:
    """The 429 of a key that has ``count`` unfinished jobs against its ``limit``."""
    return _refuse(f"this key has {count} unfinished jobs, the limit is {limit} "
                   "(RAB_QUOTA_JOBS); wait for some to finish")


def check_job(db: Session, owner: str, settings: Settings, models: int) -> None:
    """429 if one more job (training ``models`` ensemble members or partition base models)
    would pass the key's limit of unfinished jobs or of models in flight."""
    count = db.scalar(_UNFINISHED_COUNT, {"owner": owner}) or 0
    if count + 1 > settings.quota_jobs:
        raise jobs_refused(count, settings.quota_jobs)
    if models:
        in_flight = db.scalar(
            select(func.coalesce(func.sum(Job.progress_total - Job.progress_done), 0))
            .where(*_unfinished(owner), Job.method.in_(TRAINED_METHODS), Job.kind == "evaluate")
        ) or 0
        if in_flight + models > settings.quota_models:
            raise _refuse(
                f"this key has {in_flight} models in training; {models} more pass "
                f"the limit of {settings.quota_models} (RAB_QUOTA_MODELS)"
            )


def check_storage(db: Session, owner: str, settings: Settings, new_bytes: int) -> None:
    """429 if storing ``new_bytes`` more of datasets would pass the key's storage limit."""
    used = db.scalar(
        select(func.coalesce(func.sum(StoredObject.size), 0))
        .join(Dataset, Dataset.object_sha256 == StoredObject.sha256)
        .where(Dataset.owner_id == owner)
    ) or 0
    if used + new_bytes > settings.quota_bytes:
        raise _refuse(f"this key stores {used} bytes of datasets; {new_bytes} more pass the "
                      f"limit of {settings.quota_bytes} (RAB_QUOTA_BYTES)")
