"""A small DNN-RAB ensemble on an MNIST 0/1 subset through the production stack: fan-out in
chunks, aggregation by the database counter, certificates, provenance, new inputs; and a worker
killed mid-ensemble, or just after the last model is stored (around the vote): after a restart
the job completes with exactly N models."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy

import rab.data as rd

from .conftest import Service, wait_for_job
from .flow import MNIST01_ENSEMBLE, all_certificates, run_ensemble_flow, upload_mnist01

pytestmark = [pytest.mark.services, pytest.mark.slow]

PARAMS = MNIST01_ENSEMBLE


@pytest.fixture(scope="module")
def mnist01(client_a_module: httpx.Client, shared_data: Path) -> tuple[dict[str, Any], rd.Dataset]:
    return upload_mnist01(client_a_module, shared_data)


@pytest.fixture(scope="module")
def client_a_module(service: Service, key_a: str) -> Any:
    with service.client(key_a) as client:
        yield client


def _members(service: Service, job_id: str) -> list[tuple[int, str, int]]:
    engine = sqlalchemy.create_engine(service.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text(
                "SELECT member_index, state_sha256, noise_seed FROM model_members "
                "WHERE job_id = :j ORDER BY member_index"), {"j": job_id}).all()
    finally:
        engine.dispose()
    return [(int(i), s, int(n)) for i, s, n in rows]


def test_ensemble_flow(
    client_a_module: httpx.Client, mnist01: tuple[dict[str, Any], rd.Dataset], service: Service
) -> None:
    client, (dataset, local) = client_a_module, mnist01
    # 0 vs 1 is easy even for 6 tiny models
    job = run_ensemble_flow(client, dataset["id"], local, PARAMS, seed=3, min_accuracy=0.9)
    members = client.get(job["links"]["model"]).json()["members"]
    assert _members(service, job["id"]) == [
        (m["index"], m["state_sha256"], m["noise_seed"]) for m in members
    ]
    # the worker trained each task's pair of models stacked (RAB_TRAIN_BATCH=2), and says so
    for m in members:
        pair = [m["index"] // 2 * 2, m["index"] // 2 * 2 + 1]
        assert m["training"]["trainer"] == "vmap[2]" and m["training"]["batch_members"] == pair
        assert m["training"]["training_seed"] == [3, m["index"]]


def test_worker_killed_mid_ensemble(
    client_a_module: httpx.Client, mnist01: tuple[dict[str, Any], rd.Dataset], service: Service
) -> None:
    client, (dataset, _) = client_a_module, mnist01
    params = {**PARAMS, "num_models": 5, "models_per_task": 1}  # short tasks
    body = {"dataset_id": dataset["id"], "method": "ensemble", "params": {**params, "seed": 11}}
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until some, not all, models are stored
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["progress"]["done"] >= 1:
            break
        time.sleep(0.2)
    service.kill_worker()
    killed_at = client.get(f"/v1/jobs/{job_id}").json()
    assert killed_at["state"] == "running", "the ensemble finished before the worker was killed"
    assert 1 <= killed_at["progress"]["done"] < params["num_models"]
    service.start_worker()
    job = wait_for_job(client, job_id, timeout=400)
    assert job["state"] == "succeeded", (job["error"], job["attempts"], service.log_tail())
    members = _members(service, job_id)
    assert [i for i, _, _ in members] == list(range(params["num_models"]))  # exactly N, no dups
    assert len({s for _, s, _ in members}) == params["num_models"]
    assert job["progress"]["done"] == params["num_models"]
    assert job["attempts"] >= 2  # the killed worker's chunk was redelivered and counted
    assert len(all_certificates(client, job_id, "clean")) == params["num_test"]


def _kill_when_all_members_are_stored(
    client: httpx.Client, service: Service, body: dict[str, Any]
) -> dict[str, Any] | None:
    """Submit ``body``, SIGKILL the worker as soon as the job has stored all of its models and
    restart it; the job as seen at the kill (None if it had already finished then)."""
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        done = job["progress"]["done"] == body["params"]["num_models"]
        if done or job["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.02)
    service.kill_worker()
    at_kill = client.get(f"/v1/jobs/{job_id}").json()
    service.start_worker()
    return at_kill if at_kill["state"] == "running" else None


def test_worker_killed_after_the_last_member_is_stored(
    client_a_module: httpx.Client, mnist01: tuple[dict[str, Any], rd.Dataset], service: Service
) -> None:
    # Killed between storing the last model and voting (or while voting), the job must not hang:
    # the redelivered chunk queues the vote again, or the redelivered vote runs again.
    client, (dataset, _) = client_a_module, mnist01
    params = {**PARAMS, "num_models": 2, "models_per_task": 2}
    for seed in (21, 22, 23):  # the vote can win the race against the kill: try again
        body = {"dataset_id": dataset["id"], "method": "ensemble",
                "params": {**params, "seed": seed}}
        at_kill = _kill_when_all_members_are_stored(client, service, body)
        if at_kill is not None:
            break
    else:
        pytest.fail("the job finished before the worker could be killed, three times")
    job = wait_for_job(client, at_kill["id"], timeout=400)
    assert job["state"] == "succeeded", (job["error"], job["attempts"], service.log_tail())
    assert [i for i, _, _ in _members(service, job["id"])] == [0, 1]
    assert len(all_certificates(client, job["id"], "clean")) == params["num_test"]
