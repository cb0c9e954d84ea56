"""GET /v1/models/{id} (provenance) and POST /v1/models/{id}/certify (new inputs)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

import contract.api as wire
from app import quotas, submissions
from app.ahead import AheadSending
from app.artefacts import npz_bytes, put_object
from app.deps import DB, AppSettings, Owner, Store, owned
from app.fastreads import SUBSET_READ
from app.logs import bind_request_context
from app.orm import INLINE_INPUTS_BYTES, Job, Model, ModelMember, new_id
from app.orm import Dataset as DatasetRow
from app.paging import Cursor, Limit, RowId, keyset_page
from app.problems import ProblemError, bad_input
from app.responses import json_response
from app.routes.jobs import certificate_out, commit_with_units, enqueue, job_out
from app.settings import Settings
from app.units import certify_message, plan
from app.uploads import read_upload
from contract.api import INPUTS, MAX_INPUTS, TERMINAL_STATES, CertifyIn, Method, Page
from models_store import ObjectStore
from rab.data.npz import NpzArchive

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_summary(model: Model) -> wire.ModelSummary:
    """The API view of a model row, as listed."""
    return wire.ModelSummary(
        id=model.id, job_id=model.job_id, method=model.method, dataset_id=model.dataset_id,
        dataset_sha256=model.dataset_sha256, train_sha256=model.train_sha256,
        params=model.params, attack=model.attack, seeds=wire.Seeds.of(model.params, model.attack),
        code_version=model.code_version, created_at=model.created_at,
    )


@router.get("", response_model=Page[wire.ModelSummary])
def list_models(
    owner: Owner, db: DB, method: Method | None = None, dataset_id: RowId = None,
    after: Cursor = None, limit: Limit = 50,
) -> Page[wire.ModelSummary]:
    """The key's models, newest first, optionally of one method or dataset."""
    query = select(Model).where(Model.owner_id == owner)
    if method is not None:
        query = query.where(Model.method == method)
    if dataset_id is not None:
        query = query.where(Model.dataset_id == dataset_id)
    rows, cursor = keyset_page(db, Model, owner, query, after, limit, newest_first=True)
    return Page[wire.ModelSummary](items=[model_summary(r) for r in rows], next_cursor=cursor)


@router.get("/{model_id}", response_model=wire.ModelInfo)
def get_model(model_id: str, owner: Owner, db: DB) -> wire.ModelInfo:
    """Dataset hash, parameters, code version, member hashes and noise seeds."""
    model = owned(db, Model, owner, model_id)
    members = db.scalars(
        select(ModelMember).where(ModelMember.job_id == model.job_id)
        .order_by(ModelMember.member_index)
    ).all()
    return wire.ModelInfo(
        **dict(model_summary(model)),
        members=tuple(
            wire.Member(index=m.member_index, state_sha256=m.state_sha256,
                        noise_seed=m.noise_seed, training=m.training)
            for m in members
        ),
    )


_CERTIFY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/CertifyIn"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string", "format": "binary",
                            "description": "npz with one array, or an array named X",
                        }
                    },
                }
            },
        },
    }
}


def _npz_inputs(path: Path, max_bytes: int) -> np.ndarray:
    """The inputs array of an uploaded npz (``X``, or its only array): numeric, at most
    ``max_bytes`` decompressed (checked before decompressing), never unpickled."""
    try:
        with NpzArchive(path, max_bytes=max_bytes) as archive:
            names = archive.files
            if "X" not in names and len(names) != 1:
                raise bad_input(f"the npz must hold an array named X (or one array), has {names}")
            (X,) = archive.read("X" if "X" in names else names[0])
            return X
    except ValueError as exc:
        raise bad_input(f"not a readable npz of numeric arrays: {exc}") from None


async def _request_inputs(request: Request, store: ObjectStore, settings: Settings) -> Any:
    """The raw inputs of a JSON body (``{"inputs": [...]}``) or of an uploaded npz."""
    if request.headers.get("content-type", "").startswith("multipart/"):
        upload = await read_upload(request, store, settings.max_upload_bytes)
        try:
            if upload.file is None:
                raise bad_input("the form has no 'file' part")
            return await run_in_threadpool(
                _npz_inputs, upload.file.path, settings.max_decompressed_bytes
            )
        finally:
            upload.discard()
    body = await request.body()  # bounded in size and nesting by app.uploads.BoundedBodies
    try:  # Python's parser, so that a NaN literal is reported as NaN, not as bad JSON
        return CertifyIn.model_validate(json.loads(body)).inputs
    except (ValueError, ValidationError) as exc:
        raise bad_input(f"invalid certify request: {exc}") from None


def _inputs(raw: Any, input_shape: tuple[int, ...]) -> np.ndarray:
    """The inputs as float32 (m, *input_shape); 422 naming the problem otherwise.

    Only real numbers are inputs (no booleans, strings or complex numbers), and each must be
    finite as a float32, the precision the models compute in (1e39 is not)."""
    try:
        A = np.asarray(raw)
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad_input(f"inputs must be a rectangular array of numbers: {exc}") from None
    if A.dtype.kind not in "iuf":
        raise bad_input(
            f"inputs must be a rectangular array of real numbers, got {A.dtype} values"
            + (" (numbers too large, ragged rows or non-numbers)" if A.dtype.kind == "O" else "")
        )
    if A.ndim < 2 or len(A) == 0:
        raise bad_input(f"inputs must have shape (m >= 1, *{input_shape}), got {A.shape}")
    if len(A) > MAX_INPUTS:
        raise bad_input(f"at most {MAX_INPUTS} inputs per request, got {len(A)}")
    per_sample = tuple(A.shape[1:])
    if per_sample == (int(np.prod(input_shape)),):
        A = A.reshape((A.shape[0], *input_shape))
    elif per_sample != input_shape:
        raise bad_input(
            f"inputs have per-sample shape {per_sample}; the model expects {input_shape} "
            f"(or flattened {int(np.prod(input_shape))})"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        X = A.astype(np.float32)
    if not np.isfinite(X).all():
        raise bad_input("inputs contain NaN or infinite values, or values beyond float32 range")
    return X


#: Models recently certified with, and their datasets' input shapes, by model id: both rows
#: are immutable (nothing updates or deletes them), so a certify request for one of these
#: reads neither; the owner is checked on every request all the same.
_MODELS: OrderedDict[str, tuple[Model, tuple[int, ...]]] = OrderedDict()
_MODELS_KEPT = 1024
_MODELS_LOCK = threading.Lock()  # the handlers run in the thread pool


def _known_model(owner: str, model_id: str) -> tuple[Model, tuple[int, ...]] | None:
    """The owned model and its input shape if recently certified with (no database read: the
    event loop may call this), else None."""
    with _MODELS_LOCK:
        known = _MODELS.get(model_id)
        if known is not None and known[0].owner_id == owner:
            _MODELS.move_to_end(model_id)
            return known
    return None


def _input_shape(db: Session, owner: str, model_id: str) -> tuple[Model, tuple[int, ...]]:
    """The owned model and the input shape of its dataset (the connection is released)."""
    known = _known_model(owner, model_id)
    if known is not None:
        return known
    model = owned(db, Model, owner, model_id)
    dataset = db.get(DatasetRow, model.dataset_id)
    if dataset is None:  # the foreign key makes this unreachable
        raise RuntimeError(f"model {model_id} has lost its dataset {model.dataset_id}")
    db.commit()
    known = model, tuple(dataset.input_shape)
    with _MODELS_LOCK:
        _MODELS[model_id] = known
        while len(_MODELS) > _MODELS_KEPT:
            _MODELS.popitem(last=False)
    return known


def _submit(
    request: Request, db: Session, store: ObjectStore, settings: Settings, owner: str,
    model: Model, X: np.ndarray, job_id: str, ahead: bool = False,
) -> Job:
    """Store the inputs (in the job's row when small: ``app.orm.INLINE_INPUTS_BYTES``), commit
    the certify job ``job_id`` and enqueue it (the job row comes first); on PostgreSQL with
    small inputs, no message when a certify job of the model already waits for a worker
    (``app.certify_queue``), else one that carries the inputs too (``app.units``); ``ahead``
    (a lone request's): that message goes first, before the job is committed (``app.ahead``).

    Larger inputs go to the artefact store, their object row written last: its upsert holds
    that row locked until the commit (``app.artefacts.put_object``), and concurrent requests
    certifying the same inputs queue on that lock, so it is held only for the units' insert
    and the commit."""
    data = npz_bytes({"X": X})
    inputs_sha = hashlib.sha256(data).hexdigest()
    inline = len(data) <= INLINE_INPUTS_BYTES
    job = Job(
        id=job_id, owner_id=owner, kind="certify", dataset_id=model.dataset_id, model_id=model.id,
        method=model.method, params=model.params, attack=None,
        inputs_sha256=inputs_sha, inputs_inline=data if inline else None,
        progress_total=len(X), max_attempts=settings.max_job_attempts,
        request_sha256=hashlib.sha256(inputs_sha.encode()).hexdigest(),
    )
    if inline and submissions.available(db):  # one round trip (app.submissions)
        units = plan(job)
        first = [certify_message(units[0], model.id, data)]  # it carries the inputs
        sending: AheadSending = request.app.state.ahead
        sent_at = time.monotonic()
        sent = ahead and enqueue(request, job.id, first)  # a lone request's, first (app.ahead)
        try:
            covered = submissions.submit_within_quota(db, job, units, settings.quota_jobs)
        except ProblemError:  # the quota's 429
            sending.submitted(owner, taken=False)
            raise
        sending.submitted(owner, taken=True)
        # covered: taken with the waiting one
        if not covered and (not sent or sending.late(time.monotonic() - sent_at)):
            enqueue(request, job.id, first)
        return job
    quotas.check_job(db, owner, settings, 0)
    db.add(job)
    db.flush()
    if not inline:
        put_object(db, store, data, "inputs", inputs_sha)
    commit_with_units(request, db, job)
    return job


def _finished_state(db: Session, job_id: str) -> str | None:
    """The job's state if terminal, else None. The transaction ends, so that the pooled
    connection is returned while the request waits."""
    state = db.scalar(select(Job.state).where(Job.id == job_id))
    db.commit()
    return state if state in TERMINAL_STATES else None


def _outcome(db: Session, job: Job, state: str | None) -> Response:
    """The answer for the job as it is now: its certificates once it succeeded, a 422 problem
    if it failed, else 202 with the job to poll. ``state``: the one its wait ended on; a job
    known to have succeeded (its certificates are committed before it is said to have) is not
    read again."""
    if state != "succeeded":
        job = db.get_one(Job, job.id, populate_existing=True)
        state = job.state
    if state == "failed":
        raise ProblemError(422, "Certification failed", job.error or "unknown error")
    if state != "succeeded":
        return json_response(
            job_out(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"}
        )
    rows = db.execute(SUBSET_READ, {"job_id": job.id, "subset": INPUTS}).mappings().all()
    db.commit()
    return _certified(job.id, rows)


def _certified(job_id: str, rows: Sequence[Any]) -> Response:
    """The answer of a certify job that succeeded: its certificate rows, in input order."""
    return json_response(
        wire.CertifyResult(job_id=job_id, certificates=tuple(certificate_out(r) for r in rows))
    )


@router.post(
    "/{model_id}/certify",
    response_model=wire.CertifyResult,
    openapi_extra=_CERTIFY_DOC,
    responses={
        202: {"model": wire.Job, "description": "Still running: poll the job."},
        400: {"description": "Malformed multipart body."},
        413: {"description": "The body exceeds RAB_MAX_UPLOAD_BYTES."},
        415: {"description": "Neither JSON nor multipart/form-data."},
    },
)
async def certify(
    model_id: str, request: Request, owner: Owner, db: DB, store: Store, settings: AppSettings
) -> Response:
    """Certify new inputs with a stored model (run by a worker); waits up to
    ``RAB_CERTIFY_WAIT_S`` seconds, else answers 202 with the job to poll.

    The wait ends on the job's signal (``app.replies``: registered before the job is
    submitted, so it cannot be missed; polling of the job row without Redis), which carries
    the certificates of a small job (else they are read). Every database
    call runs in the thread pool, never on the event loop, and the session holds no
    connection while waiting, so many concurrent requests neither block the server nor
    exhaust the connection pool."""
    known = _known_model(owner, model_id)  # no thread hop for a model certified with lately
    if known is None:
        known = await run_in_threadpool(_input_shape, db, owner, model_id)
    model, input_shape = known
    raw = await _request_inputs(request, store, settings)
    job_id = new_id()
    with request.app.state.signals.expect(job_id) as reply, \
            request.app.state.ahead.request(owner, model.id) as ahead:
        job = await run_in_threadpool(  # one thread hop: the inputs checked, then submitted
            lambda: _submit(request, db, store, settings, owner, model,
                            _inputs(raw, input_shape), job_id, ahead)
        )
        state = await reply.wait(
            time.monotonic() + settings.certify_wait_s,
            lambda: run_in_threadpool(_finished_state, db, job.id),
        )
    bind_request_context(reply=reply.via)
    if state == "succeeded" and reply.certificates is not None:  # its rows came with it
        bind_request_context(certificates="signal")
        return _certified(job.id, reply.certificates)
    reads = request.app.state.reads
    if state == "succeeded" and reads is not None:  # its rows, read from the event loop
        return _certified(job.id, await reads.subset(job.id, INPUTS))
    return await run_in_threadpool(_outcome, db, job, state)
