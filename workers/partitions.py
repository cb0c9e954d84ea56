"""Celery tasks of partition-aggregation jobs (DPA / Finite Aggregation, ``rab.partition``).

A partition job fans out like an ensemble (``app.units.plan``): chunk units of
``models_per_task`` base models (a range of partition indices each) and, once they are all
done, the vote. The base models are ``ModelMember`` rows (index = partition, bytes in the store
by SHA-256; an empty partition's model is the empty object and abstains), so a chunk that is
redelivered or retried trains only the models not stored yet (``rab.partition.train_missing``:
fixed chunks of ``RAB_TRAIN_BATCH`` indices, the models ``train_partition`` makes with that
chunk size). The vote loads every base model, votes on the test sets and certifies with the
library's :func:`rab.evaluation.certify_partition_votes`, as ``rab.evaluation.evaluate`` does.
Certify requests against a partition model use the base models, hot in the worker's cache.

Heavy libraries (torch) are imported inside the functions, in the forked worker process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import select

from app.artefacts import npz_bytes, put_object
from app.orm import Dataset as DatasetRow
from app.orm import Model, ModelMember
from app.units import send
from contract.messaging import PARTITION_AGGREGATE_TASK, PARTITION_CHUNK_TASK
from rab.ensemble.artifacts import MemberArtifact
from rab.evaluation import (
    Certified,
    PartitionMethod,
    TestSet,
    all_inputs,
    certify_partition_votes,
)
from workers import lifecycle, tasks
from workers.celery_app import celery_app
from workers.serving import HotModel

log = logging.getLogger(__name__)

__all__ = ["certify_hot", "load_hot"]


def _method(claim: lifecycle.Claim) -> PartitionMethod:
    method = tasks._request(claim).method
    if not isinstance(method, PartitionMethod):
        raise TypeError(f"job {claim.job_id} is not a partition job")
    return method


def _config(method: PartitionMethod, row: DatasetRow) -> Any:
    """The ``rab.partition.PartitionConfig`` of the job on its dataset."""
    facts = tasks._facts(row)
    return method.config(facts.input_shape, facts.num_classes)


def _train_chunk(claim: lifecycle.Claim) -> None:
    """Train the base models ``start..stop-1`` of the claimed chunk not stored yet; each is
    stored as soon as its chunk of ``RAB_TRAIN_BATCH`` is trained. The last chunk to finish
    queues the vote."""
    from rab.ensemble.train import resolve_device
    from rab.partition.train import partition_chunk, train_missing

    db = tasks._db()
    row, evaluation = tasks._load_evaluation(claim)
    train = evaluation.train
    config = _config(_method(claim), row)
    device = resolve_device(None)
    size = partition_chunk(config.base, device, tasks._settings().train_batch)
    wanted = range(claim.args["start"], claim.args["stop"])
    X, y = np.asarray(train.X_train), np.asarray(train.y_train)
    stored = lifecycle.stored_members(db, claim.job_id)
    for artifact in train_missing(config, X, y, wanted, stored, size, device=device):
        tasks._store_member(claim.job_id, artifact)
    send(celery_app, lifecycle.finish_chunk(db, claim))


def _load_base_models(job_id: str, config: Any) -> list[Any]:
    """The base models trained by ``job_id`` in index order, loaded from the store (hashes
    verified); None for an empty partition."""
    from rab.partition.predict import load_base_model

    db, store = tasks._db(), tasks._store()
    with db.session() as session:
        rows = session.scalars(
            select(ModelMember).where(ModelMember.job_id == job_id)
            .order_by(ModelMember.member_index)
        ).all()
    total = config.scheme.num_classifiers
    if [m.member_index for m in rows] != list(range(total)):
        raise RuntimeError(f"partition job {job_id} has {len(rows)} of its {total} base models")
    return [
        load_base_model(
            MemberArtifact(m.member_index, store.get_bytes(m.state_sha256), m.state_sha256,
                           m.noise_seed, dict(m.training or {})),
            config.base,
        )
        for m in rows
    ]


def _certify(models: Sequence[Any], tests: Sequence[TestSet], config: Any
             ) -> dict[str, Certified]:
    """Votes of the base models on the test sets, certified by the library."""
    from rab.partition.predict import base_model_votes

    votes = base_model_votes(models, all_inputs(tests, np.float32), config.base)
    return certify_partition_votes(votes, tests, config.scheme, config.base.num_classes)


def _aggregate(claim: lifecycle.Claim) -> None:
    """Vote with every base model, store the vote matrices, certify the poison counts and
    summarise."""
    db, store = tasks._db(), tasks._store()
    row, evaluation = tasks._load_evaluation(claim)
    config = _config(_method(claim), row)
    n = config.scheme.num_classifiers
    lifecycle.report(db, claim.job_id, n, n, f"{lifecycle.AGGREGATING}: voting")
    certified = _certify(_load_base_models(claim.job_id, config), evaluation.tests, config)
    votes_sha256 = {}
    for subset, result in certified.items():
        with db.session() as session:
            votes_sha256[subset] = put_object(
                session, store, npz_bytes({"votes": np.asarray(result.votes)}), "votes"
            )
    lifecycle.report(db, claim.job_id, n, n, f"{lifecycle.AGGREGATING}: storing certificates")
    tasks._finish_evaluation(claim, row, evaluation, certified, {"votes_sha256": votes_sha256})


def load_hot(model: Model, method: PartitionMethod, row: DatasetRow) -> HotModel:
    """A partition model for the hot cache: its loaded base models, sized by their
    parameters and buffers."""
    models = _load_base_models(model.job_id, _config(method, row))
    size = sum(t.numel() * t.element_size() for m in models if m is not None
               for t in (*m.model.parameters(), *m.model.buffers()))
    return HotModel(None, None, int(size), base_models=tuple(models))


def certify_hot(hot: HotModel, tests: Sequence[TestSet], method: PartitionMethod,
                row: DatasetRow) -> dict[str, Certified]:
    """Certificates of new inputs from a hot partition model (the evaluation's functions)."""
    return _certify(hot.base_models or (), tests, _config(method, row))


@celery_app.task(name=PARTITION_CHUNK_TASK)
def partition_chunk(job_id: str, unit: str) -> None:
    """Train the base models of one chunk that are not stored yet."""
    tasks._run(job_id, unit, _train_chunk)


@celery_app.task(name=PARTITION_AGGREGATE_TASK)
def partition_aggregate(job_id: str, unit: str) -> None:
    """Vote with all stored base models and certify (once every chunk is done)."""
    tasks._run(job_id, unit, _aggregate)
