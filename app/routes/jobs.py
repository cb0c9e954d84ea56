"""POST/GET/DELETE /v1/jobs, per-sample certificates, summary and the certified-accuracy plots
(against the radius, and against the poison count where the job has counts)."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import contract.api as wire
from app import quotas, units
from app.db import Database
from app.deps import DB, AppSettings, Owner, Reader, owned
from app.fastreads import CERTIFICATE_COLUMNS, CERTIFICATE_READ
from app.logs import bind_request_context
from app.orm import Certificate, Job, is_id, utcnow
from app.orm import Dataset as DatasetRow
from app.paging import Cursor, Limit, RowId, keyset_page
from app.problems import ProblemError, bad_input, not_found
from app.queues import starved_queues
from app.replies import publish_job
from app.responses import json_response
from app.units import Message, message, plan, send
from contract.api import (
    MAX_INT,
    AnyJobIn,
    JobIn,
    JobKind,
    JobState,
    Method,
    Page,
    Subset,
)
from contract.jobs import COUNTED_METHODS, models_to_train, request_of, stored_fields
from rab.data import DataFacts
from rab.evaluation import EvaluationRequest

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
log = logging.getLogger(__name__)
_PLOT_LOCK = threading.Lock()
NOT_FINISHED: dict[int | str, dict[str, Any]] = {
    409: {"description": "The job has not succeeded (yet)."}
}


def job_out(job: Job) -> wire.Job:
    """The API view of a job row."""
    base = f"/v1/jobs/{job.id}"
    links = {"self": base, "certificates": f"{base}/certificates"}
    if job.kind == "evaluate":
        links.update(summary=f"{base}/summary", curve=f"{base}/curve.png")
        if job.method in COUNTED_METHODS:
            links["count_curve"] = f"{base}/count_curve.png"
    if job.model_id:
        links["model"] = f"/v1/models/{job.model_id}"
    return wire.Job(
        id=job.id, kind=job.kind, state=job.state, method=job.method,  # type: ignore[arg-type]
        dataset_id=job.dataset_id, model_id=job.model_id, params=job.params, attack=job.attack,
        seeds=wire.Seeds.of(job.params, job.attack),
        progress=wire.Progress(done=job.progress_done, total=job.progress_total, phase=job.phase),
        attempts=job.attempts, error=job.error, created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at, links=links,
    )



def facts_of(dataset: DatasetRow) -> DataFacts:
    """What the library's rules need to know of a stored dataset."""
    return DataFacts(dataset.input_shape, dataset.train_counts, dataset.test_counts)


def _checked_request(spec: AnyJobIn, dataset: DatasetRow) -> EvaluationRequest:
    """The library request of a job body, checked against the dataset with the library's own
    rules (everything a worker would refuse is a 422 here); seeds left out are drawn."""
    try:
        request = request_of(spec)
        request.check(facts_of(dataset))
    except ValueError as exc:
        raise bad_input(f"invalid {spec.method} job: {exc}") from None
    return request


def commit_with_units(request: Request, db: Session, job: Job) -> None:
    """Commit a new job together with its units of work (``app.units.plan``), then send their
    messages. The rows are the truth: if the broker is unreachable the job stays queued and
    the reaper sends the messages once it is back."""
    db.add(job)
    db.flush()  # the job's id
    units = plan(job)
    db.add_all(units)
    db.commit()
    enqueue(request, job.id, [message(u) for u in units if u.state == "pending"])


def enqueue(request: Request, job_id: str, messages: Sequence[Message]) -> bool:
    """Send the messages of a new job's pending units, once its rows are committed (a lone
    certify request's may go before: ``app.ahead``); whether they went. A broker that is
    unreachable leaves them to the reaper."""
    bind_request_context(job_id=job_id)
    try:
        send(request.app.state.celery, messages, first=True)
    except Exception as exc:
        log.warning("job %s: broker unreachable (%s); the reaper will send its work", job_id, exc)
        return False
    return True


def _earlier(db: Session, owner: str, key: str, request_sha: str) -> Job | None:
    """The job submitted earlier with this Idempotency-Key (409 if its request differed)."""
    earlier = db.scalar(select(Job).where(Job.owner_id == owner, Job.idempotency_key == key))
    if earlier is not None and earlier.request_sha256 != request_sha:
        raise ProblemError(
            409, "Conflict", "Idempotency-Key was already used for a different request"
        )
    return earlier


# The hot read first: Starlette tries a router's routes in order.
@router.get("/{job_id}/certificates/{index}", response_model=wire.Certificate)
async def get_certificate(
    request: Request, job_id: str, index: Annotated[int, PathParam(ge=0, le=MAX_INT)],
    owner: Reader, subset: Subset = "clean",
) -> Response:
    """One certified prediction with its radius."""
    where = {"job_id": job_id, "subset": subset, "index": index, "owner": owner}
    reads, db = request.app.state.reads, request.app.state.db
    if not is_id(job_id):  # a NUL byte never reaches SQL
        row = None
    elif reads is not None:  # the ownership check and the read in one query
        row = await reads.certificate(**where)
    else:
        row = await run_in_threadpool(_read_certificate, db, where)
    if row is None:
        await run_in_threadpool(_job_owned, db, owner, job_id)  # 404 for the job, or else
        raise not_found("certificate", f"{job_id}/{subset}/{index}")
    return json_response(certificate_out(row))


def _read_certificate(db: Database, where: dict[str, Any]) -> Any:
    with db.session() as session:
        return session.execute(CERTIFICATE_READ, where).mappings().first()


def _job_owned(db: Database, owner: str, job_id: str) -> None:
    with db.session() as session:
        owned(session, Job, owner, job_id)


@router.post(
    "",
    status_code=202,
    response_model=wire.Job,
    responses={
        404: {"description": "No dataset with this id for this key."},
        409: {"description": "The Idempotency-Key was used for a different request."},
        503: {"description": "The broker is unreachable (the job is stored as failed)."},
    },
)
def create_job(
    request: Request, response: Response, owner: Owner, db: DB, settings: AppSettings,
    spec: Annotated[JobIn, Body()],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> wire.Job:
    """Submit an evaluation job; a repeated ``Idempotency-Key`` returns the first job."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    request_sha = hashlib.sha256(canonical.encode()).hexdigest()
    if idempotency_key is not None:
        earlier = _earlier(db, owner, idempotency_key, request_sha)
        if earlier is not None:
            response.headers["Location"] = f"/v1/jobs/{earlier.id}"
            return job_out(earlier)
    dataset = db.get(DatasetRow, spec.dataset_id)
    if dataset is None or dataset.owner_id != owner:
        raise bad_input(f"no dataset with id {spec.dataset_id!r}")
    evaluation = _checked_request(spec, dataset)
    params, attack = stored_fields(evaluation, spec.params.model_dump())
    total = models_to_train(spec.method, params)
    quotas.check_job(db, owner, settings, total)
    job = Job(
        owner_id=owner, kind="evaluate", dataset_id=dataset.id, method=spec.method,
        params=params, attack=attack, max_attempts=settings.max_job_attempts,
        progress_total=total,
        idempotency_key=idempotency_key, request_sha256=request_sha,
    )
    try:
        commit_with_units(request, db, job)
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won the race
        db.rollback()
        earlier = None if idempotency_key is None else _earlier(
            db, owner, idempotency_key, request_sha
        )
        if earlier is None:  # only the Idempotency-Key is unique among a key's jobs
            raise
        response.headers["Location"] = f"/v1/jobs/{earlier.id}"
        return job_out(earlier)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(job)


@router.get("/{job_id}", response_model=wire.Job)
def get_job(job_id: str, owner: Owner, db: DB) -> Response:
    """State, progress, timings and error of a job; a job whose work waits on a queue that
    no worker consumes says so in its phase."""
    job = owned(db, Job, owner, job_id)
    out = job_out(job)
    starved = starved_queues(db, job.id) if job.state in ("queued", "running") else []
    if starved:
        phase = f"waiting: no worker consumes queue {', '.join(starved)}"
        out = out.model_copy(update={"progress": out.progress.model_copy(update={"phase": phase})})
    return json_response(out)


@router.get("", response_model=Page[wire.Job])
def list_jobs(
    owner: Owner, db: DB, state: JobState | None = None, method: Method | None = None,
    kind: JobKind | None = None, dataset_id: RowId = None, after: Cursor = None,
    limit: Limit = 50,
) -> Page[wire.Job]:
    """The key's jobs, newest first, optionally filtered by state, method, kind and dataset."""
    query = select(Job).where(Job.owner_id == owner)
    for column, value in ((Job.state, state), (Job.method, method), (Job.kind, kind),
                          (Job.dataset_id, dataset_id)):
        if value is not None:
            query = query.where(column == value)
    rows, cursor = keyset_page(db, Job, owner, query, after, limit, newest_first=True)
    return Page[wire.Job](items=[job_out(r) for r in rows], next_cursor=cursor)


@router.delete(
    "/{job_id}",
    response_model=wire.Job,
    responses={409: {"description": "The job has already finished."}},
)
def cancel_job(request: Request, job_id: str, owner: Owner, db: DB) -> wire.Job:
    """Cancel a queued or running job (workers stop at their next progress report)."""
    job = owned(db, Job, owner, job_id)
    cancelled = db.execute(  # one conditional UPDATE: no race with a worker finishing the job
        update(Job)
        .where(Job.id == job_id, Job.state.in_(("queued", "running")))
        .values(state="cancelled", phase="cancelled", finished_at=utcnow())
    )
    db.refresh(job)
    if cancelled.rowcount == 0:  # type: ignore[attr-defined]
        raise ProblemError(409, "Conflict", f"job {job_id} has already {job.state}")
    db.commit()  # before the signal: a woken waiter must find the row cancelled
    publish_job(request.app.state.settings, job_id, "cancelled")
    return job_out(job)


@router.post(
    "/{job_id}/retry",
    status_code=202,
    response_model=wire.Job,
    responses={409: {"description": "The job has not failed."}},
)
def retry_job(request: Request, job_id: str, owner: Owner, db: DB) -> wire.Job:
    """Resume a failed job: its unfinished units run again with a fresh attempt budget,
    without redoing what is stored (an ensemble keeps its trained members)."""
    job = owned(db, Job, owner, job_id)
    locked = db.get(Job, job_id, with_for_update=True, populate_existing=True)
    if locked is None or locked.state != "failed":
        raise ProblemError(409, "Conflict", f"job {job_id} is {job.state}, not failed")
    messages = units.retry(db, locked)
    db.commit()
    try:
        send(request.app.state.celery, messages)
    except Exception as exc:
        log.warning("job %s: broker unreachable (%s); the reaper will send its work", job_id, exc)
    return job_out(locked)


def certificate_out(row: Mapping[str, Any] | Any) -> wire.Certificate:
    """The API view of a certificate row (its columns by name)."""
    return wire.Certificate(
        index=row["sample_index"], subset=row["subset"], label=row["label"],
        prediction=row["prediction"], top_class=row["top_class"], p_a=row["p_a"],
        p_b=row["p_b"], radius=row["radius"], abstain=row["abstain"], correct=row["correct"],
        poison_count=row["poison_count"], poison_modifications=row["poison_modifications"],
        count_prediction=row["count_prediction"],
    )


@router.get("/{job_id}/certificates", response_model=Page[wire.Certificate])
def list_certificates(
    job_id: str, owner: Owner, db: DB,
    subset: Subset = "clean",
    min_radius: Annotated[float | None, Query(ge=0)] = None,
    correct: bool | None = None,
    abstain: bool | None = None,
    after: Annotated[
        int | None, Query(ge=-1, le=MAX_INT, description="next_cursor of a previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Per-sample certificates in index order, filtered; keyset pagination on the index."""
    owned(db, Job, owner, job_id)
    query = select(*CERTIFICATE_COLUMNS).where(
        Certificate.job_id == job_id, Certificate.subset == subset
    )
    if min_radius is not None:
        query = query.where(Certificate.radius >= min_radius)
    if correct is not None:
        query = query.where(Certificate.correct.is_(correct))
    if abstain is not None:
        query = query.where(Certificate.abstain.is_(abstain))
    if after is not None:
        query = query.where(Certificate.sample_index > after)
    rows = db.execute(query.order_by(Certificate.sample_index).limit(limit + 1)).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return json_response(Page[wire.Certificate](
        items=[certificate_out(r) for r in rows],
        next_cursor=str(rows[-1]["sample_index"]) if more else None,
    ))


def _finished(db: Session, owner: str, job_id: str) -> Job:
    job = owned(db, Job, owner, job_id)
    if job.state != "succeeded":
        raise ProblemError(409, "Conflict", f"job {job_id} is {job.state}, not succeeded")
    return job


@router.get(
    "/{job_id}/summary",
    response_model=wire.Summary,
    response_model_exclude_unset=True,  # as stored: no null for figures a job does not have
    responses=NOT_FINISHED,
)
def get_summary(job_id: str, owner: Owner, db: DB) -> dict[str, object]:
    """Accuracy, certified accuracy and rate at radii; clean/backdoor accuracy and ASR."""
    job = _finished(db, owner, job_id)
    return dict(job.summary or {})


@router.get(
    "/{job_id}/curve.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The plot."}, **NOT_FINISHED},
)
def get_curve(job_id: str, owner: Owner, db: DB) -> Response:
    """Certified accuracy against the radius, for the clean (and backdoored) test set."""
    from rab.plots import certified_accuracy_curve

    _finished(db, owner, job_id)
    curves = {}
    for subset in ("clean", "backdoor"):
        rows = db.execute(
            select(Certificate.prediction, Certificate.label, Certificate.radius)
            .where(Certificate.job_id == job_id, Certificate.subset == subset)
            .order_by(Certificate.sample_index)
        ).all()
        if rows:
            pred, lab, rad = (np.asarray(col) for col in zip(*rows, strict=True))
            curves[f"{subset} test set"] = (pred, lab, rad)
    return _png(certified_accuracy_curve, curves, f"job {job_id}")


@router.get(
    "/{job_id}/count_curve.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The plot."}, **NOT_FINISHED},
)
def get_count_curve(job_id: str, owner: Owner, db: DB) -> Response:
    """Certified accuracy against the poison count (training points inserted, deleted or
    changed), for the clean (and backdoored) test set of a partition or K-NN job (the K-NN's
    count is the plain K-NN's, with its own prediction)."""
    from rab.plots import poison_count_curve

    _finished(db, owner, job_id)
    curves = {}
    for subset in ("clean", "backdoor"):
        rows = db.execute(
            select(Certificate.count_prediction, Certificate.label, Certificate.poison_count)
            .where(Certificate.job_id == job_id, Certificate.subset == subset,
                   Certificate.poison_count.is_not(None))
            .order_by(Certificate.sample_index)
        ).all()
        if rows:
            pred, lab, count = (np.asarray(col) for col in zip(*rows, strict=True))
            curves[f"{subset} test set"] = (pred, lab, count)
    if not curves:
        raise ProblemError(404, "Not Found", f"job {job_id} has no poison-count certificates "
                           "(its method has none, or it ran before they were stored)")
    return _png(poison_count_curve, curves, f"job {job_id}")


def _png(plot: Any, curves: dict[str, Any], title: str) -> Response:
    with tempfile.TemporaryDirectory() as tmp, _PLOT_LOCK:  # pyplot is not thread-safe
        path = plot(curves, Path(tmp) / "curve.png", title=title)
        return Response(path.read_bytes(), media_type="image/png")
