"""Celery tasks. Heavy libraries (and torch, for ensembles) are imported inside the tasks, i.e.
in the forked child process, never in the parent before the fork."""

from __future__ import annotations

import base64
import gc
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import structlog
from celery import Task
from celery.signals import worker_process_init, worker_ready
from celery.worker import state as worker_state
from sqlalchemy import select

from app.artefacts import (
    arrays_in,
    arrays_of,
    load_arrays,
    load_dataset,
    npz_bytes,
    put_object,
    save_dataset,
)
from app.certify_queue import CERTIFY_UNIT
from app.db import Database
from app.orm import Dataset as DatasetRow
from app.orm import Model, ModelMember, new_id
from app.settings import Settings, get_settings
from app.units import Message, first_message_id, send
from contract.api import INPUTS
from contract.jobs import evaluation_request
from contract.messaging import (
    CERTIFY_TASK,
    ENSEMBLE_AGGREGATE_TASK,
    ENSEMBLE_CHUNK_TASK,
    KNN_TASK,
)
from models_store import ObjectStore
from rab.data import DataFacts
from rab.ensemble.artifacts import MemberArtifact
from rab.evaluation import (
    Certified,
    EnsembleMethod,
    Evaluation,
    EvaluationRequest,
    PartitionMethod,
    TestSet,
    certificate_rows,
    certify_members,
    certify_stacked,
    certify_test_sets,
    knn_training_of,
)
from rab.evaluation.pipeline import evaluation_metrics
from rab.metrics import DEFAULT_RADII
from workers import lifecycle
from workers.celery_app import celery_app
from workers.serving import HotModel, ModelCache

log = logging.getLogger(__name__)

_resources: dict[str, Any] = {}


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    """Engines inherited from the parent must not be used in the child: start afresh. What
    the child inherited (the imported modules) lives as long as it does: out of the
    collector's sight (``gc.freeze``), a full collection no longer walks it in the middle of
    a certify batch (``app.main`` does the same in the API)."""
    db = _resources.pop("db", None)
    if db is not None:
        db.dispose()
    _freeze_imports()


@worker_ready.connect
def _settled(**_: object) -> None:
    """The same freeze for a worker that runs its tasks in its own process
    (``rab.cli.service.worker_command``)."""
    _freeze_imports()


def _freeze_imports() -> None:
    gc.collect()
    gc.freeze()


def _settings() -> Settings:
    if "settings" not in _resources:
        _resources["settings"] = get_settings()
    return _resources["settings"]


def _db() -> Database:
    if "db" not in _resources:
        _resources["db"] = Database(_settings())
    return _resources["db"]


def _store() -> ObjectStore:
    if "store" not in _resources:
        _resources["store"] = _settings().open_store()
    return _resources["store"]


def _request(claim: lifecycle.Claim) -> EvaluationRequest:
    """The library request of the claimed job (the contract's one mapping)."""
    return evaluation_request(claim.method, claim.params, claim.attack)


def _rows(evaluation: tuple[TestSet, ...], certified: dict[str, Certified]) -> list[dict[str, Any]]:
    return [
        row
        for test in evaluation
        for row in certificate_rows(test.subset, certified[test.subset].certificates, test.labels,
                                    certified[test.subset].poison_count)
    ]


def _input_rows(certified: Certified) -> list[dict[str, Any]]:
    """The rows of a certify job's new inputs (with the poison count where the model has
    one)."""
    return certificate_rows(INPUTS, certified.certificates, None, certified.poison_count)


def _dataset_row(dataset_id: str | None) -> DatasetRow:
    with _db().session() as session:
        row = session.get(DatasetRow, dataset_id)
        if row is None:  # the foreign key makes this unreachable
            raise RuntimeError(f"dataset {dataset_id} of a job has disappeared")
        return row


def _load_evaluation(claim: lifecycle.Claim) -> tuple[DatasetRow, Evaluation]:
    """The job's dataset row and its (poisoned) training set and test sets (seeded: every
    worker of a fanned-out job rebuilds exactly the same ones)."""
    row = _dataset_row(claim.dataset_id)
    dataset = load_dataset(_store(), row.object_sha256, row)
    return row, _request(claim).prepare(dataset)


def _progress(job_id: str) -> Callable[[str, int, int], None]:
    """Progress reports into the job row; a cancelled job stops the work at the next one."""

    def report(stage: str, done: int, total: int) -> None:
        lifecycle.report(_db(), job_id, done, total, stage)

    return report


def _finish_evaluation(
    claim: lifecycle.Claim,
    row: DatasetRow,
    evaluation: Evaluation,
    certified: dict[str, Certified],
    extra: dict[str, Any],
) -> None:
    """Store the model (its training set too when poisoned), certificates and the summary:
    the library's metrics of the evaluation (``rab.evaluation.pipeline.evaluation_metrics``)."""
    db, store, train = _db(), _store(), evaluation.train
    with db.session() as session:
        train_object = (
            save_dataset(session, store, train) if evaluation.poisoning else row.object_sha256
        )
    model = Model(
        id=new_id(), owner_id=claim.owner_id, job_id=claim.job_id, dataset_id=row.id,
        method=claim.method, params=claim.params, attack=claim.attack,
        dataset_sha256=row.content_sha256, train_sha256=train.sha256,
        train_object_sha256=train_object, code_version=_settings().resolved_code_version,
    )
    out = {**evaluation_metrics(evaluation, certified, DEFAULT_RADII), **extra}
    if evaluation.poisoning:
        out["poisoning"] = evaluation.poisoning
    lifecycle.succeed(
        db, claim, _rows(evaluation.tests, certified), out, extra_rows=[model],
        model_id=model.id,
    )


def _evaluate(claim: lifecycle.Claim) -> None:
    """A K-NN evaluation job: (poison,) certify the clean (and backdoored) test set."""
    lifecycle.report(_db(), claim.job_id, 0, 0, "preparing data")
    row, evaluation = _load_evaluation(claim)
    certified = certify_test_sets(
        evaluation.train, evaluation.tests, _request(claim).method,
        progress=_progress(claim.job_id),
    )
    _finish_evaluation(claim, row, evaluation, certified, {})


def _ensemble(claim: lifecycle.Claim) -> EnsembleMethod:
    method = _request(claim).method
    if not isinstance(method, EnsembleMethod):
        raise TypeError(f"job {claim.job_id} is not an ensemble job")
    return method


def _store_member(job_id: str, artifact: MemberArtifact) -> None:
    """Store a trained member's state_dict by its SHA-256 and count it in the job row."""
    db = _db()
    with db.session() as session:
        digest = put_object(session, _store(), artifact.state_dict_bytes, "model")
    if digest != artifact.sha256:
        raise RuntimeError(f"member {artifact.index} was stored as {digest}, not "
                           f"{artifact.sha256}: the store changed its bytes")
    member = ModelMember(
        job_id=job_id, member_index=artifact.index, state_sha256=digest,
        noise_seed=artifact.noise_seed, training=dict(artifact.meta),
    )
    if not lifecycle.add_member(db, job_id, member):
        log.info("job %s: member %d was stored by another delivery", job_id, artifact.index)


def _train_chunk(claim: lifecycle.Claim) -> None:
    """Train the members ``start..stop-1`` of the claimed chunk not stored yet,
    ``RAB_TRAIN_BATCH`` at a time (stacked on one device; default: 1 on a CPU, as many as fit
    on a GPU); each batch is stored as soon as it exists, so a lost worker costs at most the
    batch in flight. The last chunk to finish queues the vote (:func:`lifecycle.finish_chunk`).
    """
    from rab.ensemble.train import train_members

    db = _db()
    _, evaluation = _load_evaluation(claim)
    train = evaluation.train
    config = _ensemble(claim).config(train.input_shape, train.num_classes)
    wanted = range(claim.args["start"], claim.args["stop"])
    todo = sorted(set(wanted) - lifecycle.stored_members(db, claim.job_id))
    X, y = np.asarray(train.X_train), np.asarray(train.y_train)
    for artifact in train_members(config, X, y, todo, chunk=_settings().train_batch):
        _store_member(claim.job_id, artifact)
    send(celery_app, lifecycle.finish_chunk(db, claim))


def _load_members(job_id: str, config: Any) -> Iterator[Any]:
    """The N members trained by ``job_id``, loaded one by one from the store (hashes
    verified) with their test-time noise u_k, on the worker's device (CUDA when it has one)."""
    from rab.ensemble.predict import load_member

    db, store = _db(), _store()
    with db.session() as session:
        members = session.scalars(
            select(ModelMember).where(ModelMember.job_id == job_id)
            .order_by(ModelMember.member_index)
        ).all()
    if [m.member_index for m in members] != list(range(config.num_models)):
        raise RuntimeError(f"ensemble of job {job_id} is incomplete: {len(members)} members")
    return (
        load_member(
            MemberArtifact(m.member_index, store.get_bytes(m.state_sha256), m.state_sha256,
                           m.noise_seed, {}),
            config,
        )
        for m in members
    )


def _hot(model_id: str, method: Any) -> HotModel:
    """The model ``model_id``, hot from the cache or loaded into it (``workers.serving``) with
    its row and its dataset's: an ensemble stacked (``rab.ensemble.stacked``), a partition
    model as its base models (``workers.partitions``), a K-NN as its verified training set."""

    def load() -> HotModel:
        with _db().session() as session:
            model = session.get(Model, model_id)
        if model is None:  # the API checked it: unreachable but for a deleted database
            raise RuntimeError(f"model {model_id} does not exist")
        row = _dataset_row(model.dataset_id)
        if isinstance(method, PartitionMethod):
            from workers import partitions

            return replace(partitions.load_hot(model, method, row), model=model, dataset=row)
        if isinstance(method, EnsembleMethod):
            from rab.ensemble.stacked import stack_members

            stacks = tuple(stack_members(_load_members(model.job_id, _config(method, row))))
            return HotModel(stacks, None, sum(s.nbytes for s in stacks), model=model,
                            dataset=row)
        train = load_dataset(_store(), model.train_object_sha256, row,
                             expected_sha256=model.train_sha256)
        prepared = knn_training_of(train)  # kept with the dataset, counted with it
        return HotModel(None, train, int(train.X_train.nbytes + train.y_train.nbytes)
                        + prepared.nbytes, model=model, dataset=row)

    return _models().get(model_id, load)


def _models() -> ModelCache:
    """This worker's hot models (``RAB_MODEL_CACHE_BYTES``)."""
    if "models" not in _resources:
        _resources["models"] = ModelCache(_settings().model_cache_bytes)
    return _resources["models"]


def _config(method: EnsembleMethod, row: DatasetRow) -> Any:
    facts = _facts(row)
    return method.config(facts.input_shape, facts.num_classes)


def _facts(row: DatasetRow) -> DataFacts:
    return DataFacts(row.input_shape, row.train_counts, row.test_counts)


def _aggregate(claim: lifecycle.Claim) -> None:
    """Vote, store the vote matrices, certify (Algorithm 1 lines 7-18) and summarise."""
    db, store = _db(), _store()
    n = claim.params["num_models"]
    lifecycle.report(db, claim.job_id, n, n, f"{lifecycle.AGGREGATING}: voting")
    row, evaluation = _load_evaluation(claim)
    method = _ensemble(claim)
    certified = certify_members(_load_members(claim.job_id, _config(method, row)),
                                evaluation.tests, method, _config(method, row))
    votes_sha256 = {}
    for subset, result in certified.items():
        votes = result.votes
        with db.session() as session:
            votes_sha256[subset] = put_object(
                session, store,
                npz_bytes({"hard": votes.hard, "soft": votes.soft,
                           "sha256": np.array(votes.sha256)}),
                "votes",
            )
    lifecycle.report(db, claim.job_id, n, n, f"{lifecycle.AGGREGATING}: storing certificates")
    _finish_evaluation(claim, row, evaluation, certified, {"votes_sha256": votes_sha256})


def _certify_inputs_of(store: Any, claim: lifecycle.Claim) -> np.ndarray:
    """A certify job's inputs: from its row when they were small enough to be kept there,
    else from the artefact store; their SHA-256 checked either way."""
    if claim.inputs_inline is None:
        return load_arrays(store, str(claim.inputs_sha256))["X"]
    return arrays_of(claim.inputs_inline, str(claim.inputs_sha256))["X"]


def _certify_inputs(claim: lifecycle.Claim) -> None:
    """A certify job: new inputs against a stored model, hot in this worker's cache (an
    ensemble needs only its members, stacked; a K-NN its training set).

    Concurrent requests are batched: the worker claimed with this job the other certify jobs
    of the same model that wait (``claim.batch``, up to ``RAB_CERTIFY_BATCH_INPUTS`` inputs in
    all: :func:`lifecycle.claim`), certifies every input in one pass and finishes every job of
    the batch, each with its own rows, in one transaction (:func:`lifecycle.succeed_all`).
    A job's summary records the batch it ran in."""
    db, store = _db(), _store()
    if claim.model_id is None or claim.inputs_sha256 is None:
        raise RuntimeError(f"certify job {claim.job_id} has no model or no inputs")
    _resources["batching"] = bool(claim.batch)
    try:
        method = _request(claim).method
        hot = _hot(claim.model_id, method)
        batch = [(c, _certify_inputs_of(store, c)) for c in (claim, *claim.batch)]
        if isinstance(method, EnsembleMethod):
            lifecycle.report(db, claim.job_id, 0, len(batch[0][1]), "voting")
        certified = _certify_hot(hot, method, tuple(TestSet(c.job_id, X, None) for c, X in batch))
    except Exception as exc:
        for sibling in claim.batch:  # the same error would fail each of them alone
            lifecycle.fail(db, sibling, f"{type(exc).__name__}: {exc}")
        raise
    inputs = sum(len(X) for _, X in batch)
    log.info("job %s: certified %d jobs (%d inputs) in one batch", claim.job_id, len(batch),
             inputs)
    summary = _batch_summary(claim.job_id, len(batch), inputs)
    skipped = lifecycle.succeed_all(db, [
        (job, _input_rows(certified[job.job_id]), summary) for job, _ in batch
    ], durable=False)
    _finished_here([job.job_id for job, _ in batch if job not in skipped])
    for job in skipped:
        if job is claim:
            raise lifecycle.JobCancelledError(job.job_id)
        log.info("job %s was cancelled", job.job_id)


def _certify_hot(hot: HotModel, method: Any, tests: tuple[TestSet, ...]) -> dict[str, Certified]:
    """The certificates of ``tests`` by a hot model: an ensemble's stacked members, a
    partition model's base models, a K-NN model's training set."""
    if isinstance(method, EnsembleMethod):
        return certify_stacked(hot.stacks or (), tests, method, _config(method, hot.dataset))
    if isinstance(method, PartitionMethod):
        from workers import partitions

        return partitions.certify_hot(hot, tests, method, hot.dataset)
    return certify_test_sets(hot.train, tests, method)


def _batch_summary(first_job: str, jobs: int, inputs: int) -> dict[str, Any]:
    """A certify job's summary: the batch it was certified in."""
    return {"batch": {"first_job": first_job, "jobs": jobs, "inputs": inputs}}


def _certify_unclaimed(job_id: str, unit: str, model_id: str, inputs: str,
                       submitted_by: float) -> bool:
    """Certify the inputs a certify job's first message carries (``app.units.certify_message``)
    before any claim, if its model is hot here, and finish the job with them in one write,
    provided no one has touched it meanwhile (``workers.successes``); whether this did. Only an
    idle worker does (a busy one claims, to batch): a lone request then waits for no claim, the
    round trip that came before its computation. A model not hot, or inputs the model cannot
    certify, leave the job to the claim (which records such an error as the job's). A job not
    committed yet (its message went ahead: ``app.ahead``) is waited for until
    ``submitted_by`` (:func:`_await_commit`)."""
    hot = _models().hot(model_id)
    if hot is None or hot.model is None:
        return False
    _bind(job_id, unit)
    data = base64.b64decode(inputs)
    digest = hashlib.sha256(data).hexdigest()  # the success checks it against the job's
    try:
        X = arrays_in(data)["X"]
        method = evaluation_request(hot.model.method, hot.model.params, None).method
        certified = _certify_hot(hot, method, (TestSet(job_id, X, None),))[job_id]
    except Exception as exc:
        log.warning("job %s: not certified unclaimed (%s: %s); claiming it", job_id,
                    type(exc).__name__, exc)
        return False
    db, rows, summary = _db(), _input_rows(certified), _batch_summary(job_id, 1, len(X))
    done = lifecycle.patiently(lifecycle.succeed_unclaimed, db, job_id, unit, model_id, digest,
                               rows, summary)
    if not done and _await_commit(db, job_id, submitted_by) is not None:  # come meanwhile?
        done = lifecycle.patiently(lifecycle.succeed_unclaimed, db, job_id, unit, model_id,
                                   digest, rows, summary)
    if done:
        _finished_here([job_id])  # a message sent again after the commit is dropped unread
        log.info("job %s: certified unclaimed (%d inputs)", job_id, len(X))
    else:
        log.info("job %s: touched while certified unclaimed; its result dropped", job_id)
    return done


#: The first pause of :func:`_await_commit`, doubling up to :data:`_LOOK_AGAIN_MAX_S`.
_LOOK_AGAIN_S, _LOOK_AGAIN_MAX_S = 0.001, 0.01


def _await_commit(db: Database, job_id: str, by: float) -> str | None:
    """The model of the certify job ``job_id`` once it exists, looked for until ``by``
    (``time.monotonic()``); None if it does not by then. The message of a lone certify
    request goes before its job is committed (``app.ahead``), and one that finds no job may
    have come first. The last look starts at ``by`` or later, so a job committed before then
    is seen; one that is not (its submission refused, or slower than the API's bound, which
    then sends the message again) leaves this one dropped."""
    pause, first_look = _LOOK_AGAIN_S, time.monotonic()
    while True:
        looked_at = time.monotonic()
        model_id = lifecycle.patiently(lifecycle.model_of, db, job_id)
        if model_id is not None:
            if looked_at > first_look:
                log.info("job %s: committed %.1f ms after a first look found it not yet",
                         job_id, 1e3 * (looked_at - first_look))
            return model_id
        if looked_at >= by:
            log.info("job %s: not committed by the end of its message's wait; the message is "
                     "dropped", job_id)
            return None
        time.sleep(min(pause, by - looked_at))
        pause = min(2 * pause, _LOOK_AGAIN_MAX_S)


def _bind(job_id: str, unit: str) -> None:
    """Name the job and unit on every log line from now on."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=job_id, unit=unit)


def _finished_here(job_ids: list[str]) -> None:
    """Remember certify jobs this worker finished: the first message of such a job (its
    submission's, ``app.units.first_message_id``), should it come after the job was
    certified in a batch it did not start, or again after the worker certified it unclaimed
    (a lone request's, sent ahead and then again: ``app.ahead``), is dropped without a
    database round trip (the worker that certified it did so after any job it covers was
    committed, and went on to those: ``app.certify_queue``). Only that message: the batch's
    success was committed without waiting for the disk, so a database crash may lose it, and
    the reaper's message for the job, then sent with a fresh id, must run it again.

    Its id joins this process's own set of revoked task ids (no broadcast; bounded and
    expiring: Celery's ``LimitedSet``), which a worker's main loop checks as each message
    arrives: where the task runs in that process (``rab worker`` of one), the message is
    acknowledged and dropped there, without waiting for the task thread (with the embedded
    mode's filesystem broker, where every request has a message, each one that went through
    the thread waited for the next poll: ten a second, measured); in a pool process,
    :func:`_serve` drops it."""
    for job_id in job_ids:
        worker_state.revoked.add(first_message_id(job_id, CERTIFY_UNIT))


def _serve(job_id: str, unit: str, message_id: str | None,
           carried: tuple[str, str] | None = None) -> None:
    """A certify message: its job, certified unclaimed from the model id and inputs it
    ``carried`` where it can be (:func:`_certify_unclaimed`), else claimed with the model's
    other waiting ones in one batch, then
    again the model's oldest waiting job with the others, batch after batch, until none waits
    (``app.certify_queue``: a request that finds another of its model waiting, or being
    certified, sends no message); after ``RAB_CERTIFY_SERVE_S`` on one model, one message for
    its oldest waiting job, behind the others queued. While this worker is under concurrent
    load (its last batch had several jobs) it first waits ``RAB_CERTIFY_BATCH_WAIT_S`` for
    more requests to arrive; a lone request does not wait, nor does a batch after another
    (the requests that arrived while the last one was certified are there). A message that
    carries inputs may have come before its job was committed (``app.ahead``): a job it finds
    no row of is looked for until ``RAB_CERTIFY_AHEAD_WAIT_S`` after this call began
    (:func:`_await_commit`)."""
    if message_id is not None and message_id in worker_state.revoked:  # _finished_here
        log.info("job %s: finished in an earlier batch of this worker", job_id)
        return
    db, settings = _db(), _settings()
    started, model_id = time.monotonic(), None
    # a message that carries inputs may have come before its job's commit (app.ahead)
    deadline, submitted_by = (started + settings.certify_serve_s,
                              started + settings.certify_ahead_wait_s)
    if _resources.get("batching"):  # under load: let more requests arrive
        time.sleep(settings.certify_batch_wait_s)
    try:
        if carried is not None and not _resources.get("batching"):
            model_id = (carried[0] if _certify_unclaimed(job_id, unit, *carried, submitted_by)
                        else None)
        to_claim, early = model_id is None, carried is not None
        while True:
            if to_claim:
                claim = _run(job_id, unit, _certify_inputs, settings.certify_batch_inputs)
                if claim is None and early:  # its message may have come first (app.ahead)
                    seen = _await_commit(db, job_id, submitted_by)
                    if seen is not None:
                        claim = _run(job_id, unit, _certify_inputs,
                                     settings.certify_batch_inputs)
                    model_id = model_id or seen
                elif model_id is None:
                    model_id = claim.model_id if claim is not None else lifecycle.patiently(
                        lifecycle.model_of, db, job_id)
                early = False  # the jobs read from the database next were committed
            to_claim = True
            waiting = None if model_id is None else lifecycle.patiently(
                lifecycle.oldest_waiting, db, model_id)
            if waiting is None:
                return
            if time.monotonic() > deadline:
                _requeue(waiting)
                return
            job_id, unit = waiting[1]
    except lifecycle.TRANSIENT_DB_ERRORS:
        log.warning("model %s: database unreachable; its waiting certify jobs are left to the "
                    "reaper", model_id)


def _requeue(waiting: Message) -> None:
    """The message for a model's oldest waiting certify job, behind those queued (a broker
    that is away leaves it to the reaper, which sends every long-waiting unit again)."""
    try:
        send(celery_app, [waiting])
    except Exception as exc:
        log.warning("job %s: broker unreachable (%s); the reaper will send its message",
                    waiting[1][0], exc)


def _run(job_id: str, unit: str, work: Callable[[lifecycle.Claim], None],
         batch_inputs: int = 0) -> lifecycle.Claim | None:
    """Claim the unit under a lease (renewed while it runs) and run it; ``batch_inputs``:
    a certify job, claimed with other waiting ones of its model (:func:`_certify_inputs`).
    The claim, None when there was nothing to run.

    A database that goes away is waited for (:func:`lifecycle.patiently`), and the work is
    repeated once it is back (stored members are kept; results replace earlier ones); past
    that patience the lease expires and the API's reaper re-queues the unit. Any other error
    fails the job with its message (no blind retries)."""
    db, lease_s = _db(), _settings().lease_s
    _bind(job_id, unit)
    try:
        claim = lifecycle.patiently(lifecycle.claim, db, job_id, unit, lease_s,
                                    lifecycle.WORKER_ID, batch_inputs)
    except lifecycle.TRANSIENT_DB_ERRORS:
        log.warning("job %s: database unreachable; unit %s left to the reaper", job_id, unit)
        return None
    if claim is None:
        log.info("job %s: unit %s has nothing to run", job_id, unit)
        return None
    with lifecycle.Heartbeat(db, [claim, *claim.batch], lease_s):
        try:
            lifecycle.patiently(work, claim)
        except lifecycle.JobCancelledError:
            log.info("job %s was cancelled", job_id)
        except lifecycle.TRANSIENT_DB_ERRORS:
            log.warning("job %s: database unreachable; unit %s left to the reaper", job_id, unit)
        except Exception as exc:
            log.exception("job %s failed", job_id)
            try:
                lifecycle.patiently(lifecycle.fail, db, claim, f"{type(exc).__name__}: {exc}")
            except lifecycle.TRANSIENT_DB_ERRORS:
                log.warning("job %s: could not record the failure; left to the reaper", job_id)
    return claim


@celery_app.task(name=KNN_TASK)
def knn_job(job_id: str, unit: str) -> None:
    """Evaluate the exact smoothed K-NN on a dataset's test set (optionally under attack)."""
    _run(job_id, unit, _evaluate)


@celery_app.task(name=ENSEMBLE_CHUNK_TASK)
def ensemble_chunk(job_id: str, unit: str) -> None:
    """Train the ensemble members of one chunk that are not stored yet."""
    _run(job_id, unit, _train_chunk)


@celery_app.task(name=ENSEMBLE_AGGREGATE_TASK)
def ensemble_aggregate(job_id: str, unit: str) -> None:
    """Vote with all N stored members and certify (once every chunk is done)."""
    _run(job_id, unit, _aggregate)


@celery_app.task(name=CERTIFY_TASK, bind=True)
def certify_inputs_job(self: Task, job_id: str, unit: str, model_id: str | None = None,
                       inputs: str | None = None) -> None:
    """Certify new inputs against a stored model, with the model's other waiting ones (a
    submission's message carries the model's id and the inputs:
    ``app.units.certify_message``)."""
    _serve(job_id, unit, self.request.id,
           None if model_id is None or inputs is None else (model_id, inputs))
