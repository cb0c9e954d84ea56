"""Workers on two "machines" that share no directory, only the database, the broker and an
S3 bucket (a real moto server): an ensemble fanned out over both and a certify request give
exactly N members and the same certificates as the service on a local store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from workers.celery_app import ENSEMBLE_CHUNK_TASK

from .conftest import (
    Service,
    create_key,
    fresh_pg_database,
    launch_service,
    wait_for_job,
)
from .flow import MNIST01_ENSEMBLE, all_certificates, upload_mnist01
from .s3server import S3Server

pytestmark = [pytest.mark.services, pytest.mark.slow]

PARAMS = {**MNIST01_ENSEMBLE, "num_models": 4, "epochs": 1, "models_per_task": 1,
          "num_test": 8}
MACHINES = ("machine-a", "machine-b")


def _wait_ready(service: Service, names: tuple[str, ...]) -> None:
    deadline = time.monotonic() + 120
    while not all("ready." in (service.logs / f"{n}.log").read_text() for n in names):
        if time.monotonic() > deadline:
            pytest.fail(f"workers did not start:\n{service.log_tail()}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def s3_service(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str,
    s3_server: S3Server,
) -> Iterator[tuple[Service, Path]]:
    """The API and two workers, each with its own data (and cache) directory, on S3."""
    root = tmp_path_factory.mktemp("s3service")
    env = {**s3_server.env, "RAB_STORE_URL": f"s3://{s3_server.new_bucket()}/rab"}
    with fresh_pg_database(postgres_url) as database_url, launch_service(
        root, database_url, redis_url, env, worker=False
    ) as service:
        for name in MACHINES:
            service.start_worker(name, env={"RAB_DATA_DIR": str(root / name)})
        _wait_ready(service, MACHINES)
        yield service, root


def _ensemble_and_certify(
    client: httpx.Client, shared_data: Path
) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """The job, its clean certificates, and the certificates of three new inputs."""
    dataset, local = upload_mnist01(client, shared_data)
    body = {"dataset_id": dataset["id"], "method": "ensemble", "params": PARAMS, "seed": 5}
    submitted = client.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    job = wait_for_job(client, submitted.json()["id"], timeout=400)
    assert job["state"] == "succeeded", job
    inputs = local.X_test[:3].reshape(3, -1).tolist()
    answer = client.post(f"{job['links']['model']}/certify", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    return job, all_certificates(client, job["id"], "clean"), answer.json()["certificates"]


def _cached(machine: Path) -> set[str]:
    return {p.parent.name + p.name for p in (machine / "cache" / "objects").glob("??/*")}


def test_two_workers_without_a_shared_directory(
    s3_service: tuple[Service, Path], service: Service, key_a: str, shared_data: Path
) -> None:
    s3, root = s3_service
    with s3.client(create_key(s3.env, "s3")) as client:
        job, certificates, answers = _ensemble_and_certify(client, shared_data)
        members = client.get(job["links"]["model"]).json()["members"]
    assert [m["index"] for m in members] == list(range(PARAMS["num_models"]))  # exactly N
    # both machines trained members, and the one that voted fetched the other's from S3
    for name in MACHINES:
        assert f"{ENSEMBLE_CHUNK_TASK}[" in (s3.logs / f"{name}.log").read_text(), name
    states = {m["state_sha256"] for m in members}
    assert any(states <= _cached(root / name) for name in MACHINES)
    assert not (root / "store").exists()  # no local store anywhere
    with service.client(key_a) as local_client:  # the same requests on a local store
        _, local_certificates, local_answers = _ensemble_and_certify(local_client, shared_data)
    assert certificates == local_certificates
    assert answers == local_answers
