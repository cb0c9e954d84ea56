"""A request means one thing everywhere: the same K-NN and ensemble requests through the HTTP
service (PostgreSQL, Redis, a worker process) and through the library in this process give
bit-identical ensemble members, identical certificates and identical summaries.

The service draws the seeds the request leaves out and records them in the job; the library
run here is built from that record alone, with ``rab.evaluation``'s own constructors (not the
service's mapping), so the test also shows that the recorded job is enough to rerun it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from rab.ensemble.artifacts import read_member
from rab.evaluation import (
    AttackSpec,
    DatasetSpec,
    EvaluationResult,
    evaluate,
    load_dataset,
    method_from_dict,
)
from rab.metrics import DEFAULT_RADII

from .conftest import wait_for_job
from .flow import all_certificates

pytestmark = [pytest.mark.services, pytest.mark.slow]

ATTACK = {"kind": "blending", "norm": 1.0, "rate": 0.1, "target": 0}
KNN = {"sigma": 0.5, "k": 3, "num_test": 20}
# models_per_task a multiple of the service's RAB_TRAIN_BATCH (2): the same stacked batches
ENSEMBLE = {"sigma": 0.5, "num_models": 4, "epochs": 2, "batch_size": 32, "alpha": 0.05,
            "models_per_task": 2, "num_test": 12}
SERVICE_ONLY = ("models_per_task", "num_test")


def _submit(client: httpx.Client, method: str, params: dict[str, Any]) -> dict[str, Any]:
    dataset = client.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]})
    assert dataset.status_code in (200, 201), dataset.text
    body = {"dataset_id": dataset.json()["id"], "method": method, "params": params,
            "attack": ATTACK}
    submitted = client.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    job = wait_for_job(client, submitted.json()["id"], timeout=400)
    assert job["state"] == "succeeded", job
    assert job["seeds"]["poisoning"] is not None  # drawn by the service, recorded
    return job


def _library_run(job: dict[str, Any], workdir: Path | None = None) -> EvaluationResult:
    """The library's evaluation of the job's record (its method, attack and seeds)."""
    fields = {k: v for k, v in job["params"].items() if k not in SERVICE_ONLY}
    method = method_from_dict({"name": job["method"], **fields})
    return evaluate(
        load_dataset(DatasetSpec("digits", classes=(0, 1))), method,
        AttackSpec.from_dict(job["attack"]), radii=DEFAULT_RADII,
        num_test=job["params"]["num_test"], vanilla=False, workdir=workdir, train_batch=2,
    )


def _check_same_results(client: httpx.Client, job: dict[str, Any], ours: EvaluationResult
                        ) -> None:
    for test in ours.evaluation.tests:
        batch = ours.certified[test.subset].certificates
        served = all_certificates(client, job["id"], test.subset)
        assert [c["prediction"] for c in served] == batch.prediction.tolist()
        assert [c["top_class"] for c in served] == batch.top_class.tolist()
        assert [c["p_a"] for c in served] == batch.p_a.tolist()
        assert [c["p_b"] for c in served] == batch.p_b.tolist()
        assert [float(c["radius"]) for c in served] == batch.radius.tolist()
        assert [c["label"] for c in served] == test.labels.tolist()  # type: ignore[union-attr]
    summary = client.get(f"/v1/jobs/{job['id']}/summary").json()
    assert summary.pop("poisoning") == json.loads(json.dumps(ours.evaluation.poisoning))
    summary.pop("votes_sha256", None)
    expected = json.loads(json.dumps(ours.metrics))
    assert summary == expected
    assert not any(isinstance(v, float) and math.isnan(v) for v in summary.values())


def test_knn_request_gives_the_library_results(client_a: httpx.Client) -> None:
    job = _submit(client_a, "knn", KNN)
    _check_same_results(client_a, job, _library_run(job))


def test_ensemble_request_gives_the_library_members_and_results(
    client_a: httpx.Client, tmp_path: Path
) -> None:
    job = _submit(client_a, "ensemble", ENSEMBLE)
    assert job["seeds"]["training"] is not None
    ours = _library_run(job, tmp_path)
    (directory,) = tmp_path.glob("ensemble-*")
    model = client_a.get(job["links"]["model"]).json()
    served = [m["state_sha256"] for m in model["members"]]
    assert served == [read_member(directory, k).sha256 for k in range(ENSEMBLE["num_models"])]
    assert "expected_not_certified" in ours.metrics
    _check_same_results(client_a, job, ours)
