"""Celery tasks. Heavy libraries (and torch, for ensembles) are imported inside the tasks, i.e.
in the forked child process, never in the parent before the fork."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from celery import Task
from celery.signals import worker_process_init
from sqlalchemy import select

from app.artefacts import load_arrays, load_dataset, npz_bytes, put_object, save_dataset
from app.db import Database
from app.jobspec import VOTES, attack_spec, ensemble_config
from app.orm import Dataset as DatasetRow
from app.orm import Job, Model, ModelMember, new_id
from app.settings import Settings, get_settings
from models_store import ObjectStore
from rab.bounds import CertificateBatch
from rab.data import Dataset
from rab.ensemble.artifacts import MemberArtifact
from rab.ensemble.certify import certify_votes, expected_certificates
from rab.ensemble.vote import VoteMatrices
from rab.evaluation import Evaluation, KnnMethod, TestSet, prepare
from rab.evaluation.methods import certify_test_sets
from rab.evaluation.summary import certificate_rows, summary
from rab.metrics import summarize
from workers import lifecycle
from workers.celery_app import (
    CERTIFY_TASK,
    ENSEMBLE_AGGREGATE_TASK,
    ENSEMBLE_CHUNK_TASK,
    KNN_TASK,
    celery_app,
)

log = logging.getLogger(__name__)

_resources: dict[str, Any] = {}


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    """Engines inherited from the parent must not be used in the child: start afresh."""
    db = _resources.pop("db", None)
    if db is not None:
        db.dispose()


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


def _knn(params: dict[str, Any]) -> KnnMethod:
    """The exact smoothed K-NN of a job (numpy backend: K-NN jobs run on the ``cpu`` queue)."""
    return KnnMethod(
        sigma=params["sigma"], k=params["k"], num_levels=params["num_levels"],
        spread=params["spread"], backend="numpy",
    )


def _certify_knn(
    job_id: str, train: Dataset, tests: tuple[TestSet, ...], params: dict[str, Any]
) -> dict[str, tuple[TestSet, CertificateBatch]]:
    """Exact K-NN certificates (Theorem 3, eq. 14) of every test set; progress is reported to
    the job row between chunks of test points, where a cancellation stops the work."""

    def progress(stage: str, done: int, total: int) -> None:
        lifecycle.report(_db(), job_id, done, total, stage)

    certified = certify_test_sets(train, tests, _knn(params), progress=progress)
    return {t.subset: (t, certified[t.subset].certificates) for t in tests}


def _rows(results: dict[str, tuple[TestSet, CertificateBatch]]) -> list[dict[str, Any]]:
    return [
        row
        for subset, (test, batch) in results.items()
        for row in certificate_rows(subset, batch, test.labels)
    ]


def _dataset_row(dataset_id: str | None) -> DatasetRow:
    with _db().session() as session:
        row = session.get(DatasetRow, dataset_id)
        assert row is not None, "a job's dataset row cannot disappear (foreign key)"
        return row


def _load_evaluation(claim: lifecycle.Claim) -> tuple[DatasetRow, Evaluation]:
    """The job's dataset row and its (poisoned) training set and test sets (seeded: every
    worker of a fanned-out job rebuilds exactly the same ones)."""
    row = _dataset_row(claim.dataset_id)
    dataset = load_dataset(_store(), row.object_sha256, row)
    attack = None if claim.attack is None else attack_spec(claim.attack, claim.seed)
    return row, prepare(dataset, attack, num_test=claim.params.get("num_test"))


def _finish_evaluation(
    claim: lifecycle.Claim,
    row: DatasetRow,
    evaluation: Evaluation,
    results: dict[str, tuple[TestSet, CertificateBatch]],
    extra: dict[str, Any],
) -> None:
    """Store the model (its training set too when poisoned), certificates and summary."""
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
    out = {**summary(results), **extra}
    if evaluation.poisoning:
        out["poisoning"] = evaluation.poisoning
    lifecycle.succeed(
        db, claim.job_id, _rows(results), out, extra_rows=[model], model_id=model.id
    )


def _evaluate(claim: lifecycle.Claim) -> None:
    """A K-NN evaluation job: (poison,) certify the clean (and backdoored) test set."""
    lifecycle.report(_db(), claim.job_id, 0, 0, "preparing data")
    row, evaluation = _load_evaluation(claim)
    results = _certify_knn(claim.job_id, evaluation.train, evaluation.tests, claim.params)
    _finish_evaluation(claim, row, evaluation, results, {})


def _store_member(job_id: str, artifact: MemberArtifact) -> None:
    """Store a trained member's state_dict by its SHA-256 and count it in the job row."""
    db = _db()
    with db.session() as session:
        digest = put_object(session, _store(), artifact.state_dict_bytes, "model")
    assert digest == artifact.sha256
    member = ModelMember(
        job_id=job_id, member_index=artifact.index, state_sha256=digest,
        noise_seed=artifact.noise_seed, training=dict(artifact.meta),
    )
    if not lifecycle.add_member(db, job_id, member):
        log.info("job %s: member %d was stored by another delivery", job_id, artifact.index)


def _train_chunk(claim: lifecycle.Claim, start: int, stop: int) -> None:
    """Train the members of ``start..stop-1`` not stored yet, ``RAB_TRAIN_BATCH`` at a time
    (stacked on one device; default: 1 on a CPU, as many as fit on a GPU); each batch is
    stored as soon as it exists, so a lost worker costs at most the batch in flight.

    Whenever every member is stored afterwards, the vote is queued: a redelivered chunk whose
    worker died after storing the last member queues it again, and the aggregation task itself
    makes sure only one vote runs (:func:`lifecycle.start_aggregation`)."""
    from rab.ensemble.train import train_members

    db = _db()
    _, evaluation = _load_evaluation(claim)
    train = evaluation.train
    config = ensemble_config(claim.params, train.input_shape, train.num_classes, claim.seed)
    todo = sorted(set(range(start, stop)) - lifecycle.stored_members(db, claim.job_id))
    X, y = np.asarray(train.X_train), np.asarray(train.y_train)
    for artifact in train_members(config, X, y, todo, chunk=_settings().train_batch):
        _store_member(claim.job_id, artifact)
    if len(lifecycle.stored_members(db, claim.job_id)) == config.num_models:
        celery_app.send_task(ENSEMBLE_AGGREGATE_TASK, args=[claim.job_id], queue="gpu")


def _ensemble_votes(
    job_id: str, params: dict[str, Any], seed: int, train: Dataset, inputs: list[np.ndarray]
) -> list[VoteMatrices]:
    """Votes of the N members trained by ``job_id`` (loaded one by one, hashes verified) on
    each input set, each member on x + u_k (eq. 19)."""
    from rab.ensemble.predict import load_member, predict_votes

    db, store = _db(), _store()
    config = ensemble_config(params, train.input_shape, train.num_classes, seed)
    with db.session() as session:
        members = session.scalars(
            select(ModelMember).where(ModelMember.job_id == job_id)
            .order_by(ModelMember.member_index)
        ).all()
    if [m.member_index for m in members] != list(range(config.num_models)):
        raise RuntimeError(f"ensemble of job {job_id} is incomplete: {len(members)} members")
    loaded = (
        load_member(
            MemberArtifact(m.member_index, store.get_bytes(m.state_sha256), m.state_sha256,
                           m.noise_seed, {}),
            config,
        )
        for m in members
    )
    X = np.concatenate([np.asarray(x, dtype=np.float32) for x in inputs])
    votes = predict_votes(loaded, X, config)
    out, offset = [], 0
    for x in inputs:
        part = slice(offset, offset + len(x))
        out.append(VoteMatrices(votes.hard[:, part], votes.soft[:, part], votes.sha256,
                                votes.sigma))
        offset += len(x)
    return out


def _votes_certifier(params: dict[str, Any]) -> Callable[[VoteMatrices], CertificateBatch]:
    def certify(votes: VoteMatrices) -> CertificateBatch:
        return certify_votes(votes, alpha=params["alpha"], votes=VOTES[params["bound"]])

    return certify


def _aggregate(claim: lifecycle.Claim, redelivered: bool) -> None:
    """Vote, store the vote matrices, certify (Algorithm 1 lines 7-18) and summarise."""
    db, store = _db(), _store()
    n = claim.params["num_models"]
    if not lifecycle.start_aggregation(db, claim.job_id, n, resume=redelivered):
        log.info("job %s: the vote runs elsewhere (or members are missing)", claim.job_id)
        return
    lifecycle.report(db, claim.job_id, n, n, f"{lifecycle.AGGREGATING}: voting")
    row, evaluation = _load_evaluation(claim)
    tests = evaluation.tests
    matrices = _ensemble_votes(
        claim.job_id, claim.params, claim.seed, evaluation.train, [t.X for t in tests]
    )
    certify = _votes_certifier(claim.params)
    results: dict[str, tuple[TestSet, CertificateBatch]] = {}
    extra: dict[str, dict[str, Any]] = {"votes_sha256": {}, "expected": {}}
    for test, votes in zip(tests, matrices, strict=True):
        assert test.labels is not None
        results[test.subset] = (test, certify(votes))
        with db.session() as session:
            extra["votes_sha256"][test.subset] = put_object(
                session, store,
                npz_bytes({"hard": votes.hard, "soft": votes.soft,
                           "sha256": np.array(votes.sha256)}),
                "votes",
            )
        point = expected_certificates(votes, votes=VOTES[claim.params["bound"]])
        extra["expected"][test.subset] = summarize(
            point.prediction, test.labels, point.radius
        ).as_dict() | {"note": "point-estimate radius from vote shares; NOT certified"}
    lifecycle.report(db, claim.job_id, n, n, f"{lifecycle.AGGREGATING}: storing certificates")
    _finish_evaluation(claim, row, evaluation, results, extra)


def _certify_inputs(claim: lifecycle.Claim) -> None:
    """A certify job: new inputs against a stored model."""
    db, store = _db(), _store()
    with db.session() as session:
        model = session.get(Model, claim.model_id)
        assert model is not None and claim.inputs_sha256 is not None
        source = session.get(Job, model.job_id)
        assert source is not None
    row = _dataset_row(model.dataset_id)
    train = load_dataset(store, model.train_object_sha256, row, expected_sha256=model.train_sha256)
    X = load_arrays(store, claim.inputs_sha256)["X"]
    if model.method == "knn":
        inputs = TestSet("inputs", X, None)
        rows = _rows(_certify_knn(claim.job_id, train, (inputs,), model.params))
    else:
        lifecycle.report(db, claim.job_id, 0, len(X), "voting")
        (votes,) = _ensemble_votes(model.job_id, model.params, source.seed, train, [X])
        rows = certificate_rows("inputs", _votes_certifier(model.params)(votes), None)
    lifecycle.succeed(db, claim.job_id, rows, {})


def _run(job_id: str, redelivered: bool, work: Callable[[lifecycle.Claim], None]) -> None:
    """Claim the job and run it; an exception fails the job (no blind retries)."""
    db = _db()
    claim = lifecycle.claim(db, job_id, redelivered=redelivered)
    if claim is None:
        log.info("job %s: nothing to run", job_id)
        return
    try:
        work(claim)
    except lifecycle.JobCancelledError:
        log.info("job %s was cancelled", job_id)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        lifecycle.fail(db, job_id, f"{type(exc).__name__}: {exc}")


def _redelivered(task: Task) -> bool:
    return bool((task.request.delivery_info or {}).get("redelivered"))


@celery_app.task(name=KNN_TASK, bind=True)
def knn_job(self: Task, job_id: str) -> None:
    """Evaluate the exact smoothed K-NN on a dataset's test set (optionally under attack)."""
    _run(job_id, _redelivered(self), _evaluate)


@celery_app.task(name=ENSEMBLE_CHUNK_TASK, bind=True)
def ensemble_chunk(self: Task, job_id: str, start: int, stop: int) -> None:
    """Train ensemble members ``start..stop-1`` that are not stored yet."""
    _run(job_id, _redelivered(self), lambda claim: _train_chunk(claim, start, stop))


@celery_app.task(name=ENSEMBLE_AGGREGATE_TASK, bind=True)
def ensemble_aggregate(self: Task, job_id: str) -> None:
    """Vote with all N stored members and certify (once every member exists)."""
    redelivered = _redelivered(self)
    _run(job_id, redelivered, lambda claim: _aggregate(claim, redelivered))


@celery_app.task(name=CERTIFY_TASK, bind=True)
def certify_inputs_job(self: Task, job_id: str) -> None:
    """Certify new inputs against a stored model."""
    _run(job_id, _redelivered(self), _certify_inputs)
