"""Poison-count certificates through the production stack (PostgreSQL, Redis, a Celery worker
process, uvicorn) on an MNIST 0/1 subset uploaded over HTTP: a DPA job fans out over chunks of
base models and certifies exactly what the library certifies in-process (same request, same
seed: bit-identical counts and predictions); a K-NN job's certificates carry the plain K-NN's
count; a worker killed mid-job resumes with the stored base models kept; bad partition
parameters are a 422 problem."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy

import rab.data as rd
from contract.jobs import evaluation_request
from rab.evaluation import certify_test_sets
from rab.evaluation.pipeline import evaluation_metrics
from rab.metrics import DEFAULT_RADII

from .conftest import Service, wait_for_job
from .flow import all_certificates, check_curve, upload_mnist01

pytestmark = [pytest.mark.services, pytest.mark.slow]

#: 6 base models of about 33 images, 1 epoch; 3 chunks of 2 (the worker trains pairs stacked,
#: RAB_TRAIN_BATCH=2, as the reference below does)
PARAMS = {"k": 6, "epochs": 1, "batch_size": 16, "models_per_task": 2, "seed": 5,
          "num_test": 16}
TRAIN_BATCH = 2


@pytest.fixture(scope="module")
def client_a_module(service: Service, key_a: str) -> Any:
    with service.client(key_a) as client:
        yield client


@pytest.fixture(scope="module")
def mnist01(client_a_module: httpx.Client, shared_data: Path) -> tuple[dict[str, Any], rd.Dataset]:
    return upload_mnist01(client_a_module, shared_data)


@pytest.fixture(scope="module")
def partition_job(
    client_a_module: httpx.Client, mnist01: tuple[dict[str, Any], rd.Dataset]
) -> dict[str, Any]:
    dataset, _ = mnist01
    body = {"dataset_id": dataset["id"], "method": "partition", "params": PARAMS}
    submitted = client_a_module.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["progress"]["total"] == PARAMS["k"]
    job = wait_for_job(client_a_module, submitted.json()["id"], timeout=400)
    assert job["state"] == "succeeded", job
    return job


def _members(service: Service, job_id: str) -> list[tuple[int, int, str]]:
    engine = sqlalchemy.create_engine(service.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text(
                "SELECT member_index, id, state_sha256 FROM model_members WHERE job_id = :j "
                "ORDER BY member_index"), {"j": job_id}).all()
    finally:
        engine.dispose()
    return [(int(i), int(n), s) for i, n, s in rows]


def _units(service: Service, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    engine = sqlalchemy.create_engine(service.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text(
                "SELECT name, args FROM work_units WHERE job_id = :j ORDER BY name"),
                {"j": job_id}).all()
    finally:
        engine.dispose()
    return [(name, args if isinstance(args, dict) else {}) for name, args in rows]


def _reference(job: dict[str, Any], local: rd.Dataset) -> tuple[Any, dict[str, Any]]:
    """The library's certificates and metrics of the job's own recorded request."""
    request = evaluation_request(job["method"], job["params"], job["attack"])
    ev = request.prepare(local)
    certified = certify_test_sets(ev.train, ev.tests, request.method, train_batch=TRAIN_BATCH)
    return certified, evaluation_metrics(ev, certified, DEFAULT_RADII)


def _check_counts(certs: list[dict[str, Any]], count: Any) -> None:
    assert [c["poison_count"] for c in certs] == count.count.tolist()
    assert [c["poison_modifications"] for c in certs] == count.modifications.tolist()
    assert [c["count_prediction"] for c in certs] == count.prediction.tolist()


def test_partition_job_certifies_what_the_library_does(
    client_a_module: httpx.Client, mnist01: tuple[dict[str, Any], rd.Dataset],
    partition_job: dict[str, Any], service: Service,
) -> None:
    client, (_, local), job = client_a_module, mnist01, partition_job
    assert job["seeds"] == {"poisoning": None, "training": PARAMS["seed"]}
    assert job["progress"]["done"] == PARAMS["k"]
    chunks = [args for name, args in _units(service, job["id"]) if name.startswith("chunk-")]
    assert sorted((a["start"], a["stop"]) for a in chunks) == [(0, 2), (2, 4), (4, 6)]
    certified, metrics = _reference(job, local)
    certs = all_certificates(client, job["id"], "clean")
    ours = certified["clean"]
    assert [c["prediction"] for c in certs] == ours.certificates.prediction.tolist()
    assert [c["count_prediction"] for c in certs] == [c["prediction"] for c in certs]
    assert all(float(c["radius"]) == 0 for c in certs)  # a vote has no L2 radius
    _check_counts(certs, ours.poison_count)
    summary = client.get(f"/v1/jobs/{job['id']}/summary").json()
    assert summary["clean"]["poison_count"] == metrics["clean"]["poison_count"]
    assert summary["clean"]["poison_count"]["method"] == "dpa"
    assert summary["clean"]["accuracy"] >= 0.9, summary["clean"]  # 0 vs 1 is easy
    assert max(c["poison_count"] for c in certs) >= 1
    # provenance: one member row per partition, with its subset's size and hash
    model = client.get(job["links"]["model"]).json()
    assert [m["index"] for m in model["members"]] == list(range(PARAMS["k"]))
    for m in model["members"]:
        assert m["training"]["training_seed"] == [PARAMS["seed"], m["index"]]
        assert m["training"]["train_size"] > 0 and len(m["training"]["subset_sha256"]) == 64
        assert m["training"]["trainer"] == "vmap[2]"
    # new inputs against the stored model: the same votes, the same counts
    inputs = local.X_test[:3].reshape(3, -1).tolist()
    answer = client.post(f"{job['links']['model']}/certify", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    for mine, theirs in zip(answer.json()["certificates"], certs[:3], strict=True):
        for field in ("prediction", "poison_count", "poison_modifications", "count_prediction"):
            assert mine[field] == theirs[field], field
    check_curve(client, job)
    png = client.get(job["links"]["count_curve"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_knn_job_certificates_carry_the_plain_knn_count(
    client_a_module: httpx.Client, mnist01: tuple[dict[str, Any], rd.Dataset]
) -> None:
    client, (dataset, local) = client_a_module, mnist01
    params = {"sigma": 1.0, "k": 5, "num_levels": 50, "num_test": 16}
    body = {"dataset_id": dataset["id"], "method": "knn", "params": params}
    job = wait_for_job(client, client.post("/v1/jobs", json=body).json()["id"])
    assert job["state"] == "succeeded", job
    certified, metrics = _reference(job, local)
    certs = all_certificates(client, job["id"], "clean")
    assert [c["prediction"] for c in certs] == certified["clean"].certificates.prediction.tolist()
    _check_counts(certs, certified["clean"].poison_count)
    summary = client.get(f"/v1/jobs/{job['id']}/summary").json()
    assert summary["clean"]["poison_count"] == metrics["clean"]["poison_count"]
    assert summary["clean"]["poison_count"]["classifier"] == "plain K-NN (K=5)"
    answer = client.post(f"{job['links']['model']}/certify",
                         json={"inputs": local.X_test[:2].reshape(2, -1).tolist()})
    assert answer.status_code == 200, answer.text
    for mine, theirs in zip(answer.json()["certificates"], certs[:2], strict=True):
        assert mine["poison_count"] == theirs["poison_count"]
        assert mine["count_prediction"] == theirs["count_prediction"]


def test_worker_killed_mid_partition_job_keeps_stored_models(
    client_a_module: httpx.Client, mnist01: tuple[dict[str, Any], rd.Dataset],
    partition_job: dict[str, Any], service: Service,
) -> None:
    client, (dataset, _) = client_a_module, mnist01
    params = {**PARAMS, "models_per_task": 1}  # short tasks; each trains its aligned pair
    body = {"dataset_id": dataset["id"], "method": "partition", "params": params}
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until some, not all, models are stored
        if client.get(f"/v1/jobs/{job_id}").json()["progress"]["done"] >= 1:
            break
        time.sleep(0.1)
    service.kill_worker()
    before = _members(service, job_id)
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "running"
    assert 1 <= len(before) < PARAMS["k"], "the job finished before the worker was killed"
    service.start_worker()
    job = wait_for_job(client, job_id, timeout=400)
    assert job["state"] == "succeeded", (job["error"], job["attempts"], service.log_tail())
    after = _members(service, job_id)
    assert [i for i, _, _ in after] == list(range(PARAMS["k"]))  # exactly k, no duplicates
    assert set(before) <= set(after)  # the rows stored before the kill were kept, not redone
    # same seed and data: bit-identical base models to the uninterrupted job's
    assert [s for _, _, s in after] == [s for _, _, s in _members(service, partition_job["id"])]
    clean = all_certificates(client, job_id, "clean")
    assert [c["poison_count"] for c in clean] == [
        c["poison_count"] for c in all_certificates(client, partition_job["id"], "clean")
    ]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"k": 201}, "201 partitions but the training set has 200"),
        ({"k": 4, "d": 2}, "aggregation='fa' only"),
        ({"k": 4, "aggregation": "bagging"}, "aggregation"),
        ({"k": 4, "preset": "nope"}, "preset"),
        ({"k": 40, "aggregation": "fa", "d": 5000}, "exceed the limit"),
        ({"k": 4, "epochs": 0}, "epochs"),
        ({"k": 4, "sigma": 1.0}, "sigma"),
    ],
)
def test_bad_partition_parameters_are_422(
    client_a_module: httpx.Client, mnist01: tuple[dict[str, Any], rd.Dataset],
    params: dict[str, Any], needle: str,
) -> None:
    dataset, _ = mnist01
    body = {"dataset_id": dataset["id"], "method": "partition", "params": params}
    response = client_a_module.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert needle in response.text, response.text


def test_partition_job_is_listed_by_method(
    client_a_module: httpx.Client, partition_job: dict[str, Any]
) -> None:
    page = client_a_module.get("/v1/jobs", params={"method": "partition"}).json()
    assert partition_job["id"] in [j["id"] for j in page["items"]]
    assert all(j["method"] == "partition" for j in page["items"])
    evaluations = client_a_module.get(
        "/v1/jobs", params={"method": "partition", "kind": "evaluate"}).json()["items"]
    assert partition_job["id"] in [j["id"] for j in evaluations]  # certify jobs are "certify"
