"""Workers on two "machines" that share no directory, only the database, the broker and an
S3 bucket (a real moto server, reached through a proxy that can cut it off): an ensemble
fanned out over both and a certify request give exactly N members and the same certificates
as the service on a local store; with the store gone mid-download or mid-upload a job fails
with a clear error, stores nothing, and succeeds once the store is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from contract.messaging import ENSEMBLE_CHUNK_TASK

from .conftest import (
    Service,
    create_key,
    fresh_pg_database,
    launch_service,
    wait_for_job,
)
from .flow import MNIST01_ENSEMBLE, all_certificates, upload_mnist01
from .helpers import blobs, npz_bytes, upload
from .s3server import FaultProxy, S3Server

pytestmark = [pytest.mark.services, pytest.mark.slow]

PARAMS: dict[str, Any] = {**MNIST01_ENSEMBLE, "num_models": 4, "epochs": 1, "models_per_task": 1,
          "num_test": 8}
MACHINES = ("machine-a", "machine-b")


def _wait_ready(service: Service, names: tuple[str, ...]) -> None:
    deadline = time.monotonic() + 120
    while not all("ready." in (service.logs / f"{n}.log").read_text() for n in names):
        if time.monotonic() > deadline:
            pytest.fail(f"workers did not start:\n{service.log_tail()}")
        time.sleep(0.3)


@dataclass
class S3Deployment:
    service: Service
    root: Path
    proxy: FaultProxy  # between every process and the S3 server
    server: S3Server
    bucket: str

    def objects(self) -> set[str]:
        """Every object key in the bucket, as the server itself lists them."""
        pages = self.server.client().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}


@pytest.fixture(scope="module")
def s3_service(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str,
    s3_server: S3Server,
) -> Iterator[S3Deployment]:
    """The API and two workers, each with its own data (and cache) directory, on S3."""
    root = tmp_path_factory.mktemp("s3service")
    proxy = FaultProxy(int(urlparse(s3_server.endpoint).port or 0))
    bucket = s3_server.new_bucket()
    env = {**s3_server.env, "AWS_ENDPOINT_URL": proxy.endpoint,
           "RAB_STORE_URL": f"s3://{bucket}/rab"}
    with fresh_pg_database(postgres_url) as database_url, launch_service(
        root, database_url, redis_url, env, worker=False
    ) as service:
        for name in MACHINES:
            service.start_worker(name, env={"RAB_DATA_DIR": str(root / name)})
        _wait_ready(service, MACHINES)
        yield S3Deployment(service, root, proxy, s3_server, bucket)
    proxy.close()


def _ensemble_and_certify(
    client: httpx.Client, shared_data: Path
) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """The job, its clean certificates, and the certificates of three new inputs."""
    dataset, local = upload_mnist01(client, shared_data)
    body = {"dataset_id": dataset["id"], "method": "ensemble", "params": {**PARAMS, "seed": 5}}
    submitted = client.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    job: dict[str, Any] = wait_for_job(client, submitted.json()["id"], timeout=400)
    assert job["state"] == "succeeded", job
    inputs = local.X_test[:3].reshape(3, -1).tolist()
    answer = client.post(f"{job['links']['model']}/certify", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    return job, all_certificates(client, job["id"], "clean"), answer.json()["certificates"]


def _cached(machine: Path) -> set[str]:
    return {p.parent.name + p.name for p in (machine / "cache" / "objects").glob("??/*")}


def test_two_workers_without_a_shared_directory(
    s3_service: S3Deployment, service: Service, key_a: str, shared_data: Path
) -> None:
    s3, root = s3_service.service, s3_service.root
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


KNN = {"sigma": 1.0, "k": 5, "spread": 0.1, "num_test": 8}
ATTACK = {"kind": "one_pixel", "norm": 0.1, "rate": 0.05, "target": 0, "positions": [[0]]}


def _knn_job(client: httpx.Client, seed: int, attack: dict[str, Any] | None) -> dict[str, Any]:
    """A new dataset (about 60 KB as stored: no machine has it cached), and a K-NN job body."""
    response = upload(client, npz_bytes(**blobs(seed, n_train=2000)), "blobs.npz")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = {"dataset_id": response.json()["id"], "method": "knn", "params": KNN}
    if attack is not None:
        body["attack"] = {**attack, "seed": seed}
    return body


@pytest.mark.parametrize(("direction", "attack", "doing"), [
    ("download", None, "reading"),  # the workers fetch the dataset
    ("upload", ATTACK, "writing"),  # the poisoned training set is stored at the end
])
def test_store_gone_mid_job_fails_clearly_then_recovers(
    s3_service: S3Deployment, direction: str, attack: dict[str, Any] | None, doing: str
) -> None:
    s3 = s3_service
    with s3.service.client(create_key(s3.service.env, direction)) as client:
        body = _knn_job(client, seed=len(direction), attack=attack)
        before, cuts = s3.objects(), s3.proxy.cuts
        cut: dict[str, Any] = {direction: 20_000}  # within the dataset / training set bytes
        s3.proxy.cut_after(**cut)
        submitted = client.post("/v1/jobs", json=body)
        assert submitted.status_code == 202, submitted.text
        job: dict[str, Any] = wait_for_job(client, submitted.json()["id"])
        assert job["state"] == "failed", job
        assert s3.proxy.cuts == cuts + 1
        assert f"StoreUnavailableError: object store s3://{s3.bucket}/rab/ failed {doing}" in (
            job["error"]), job["error"]
        assert s3.objects() == before  # nothing (partial or not) was published
        s3.proxy.up()
        job = wait_for_job(client, client.post("/v1/jobs", json=body).json()["id"])
        assert job["state"] == "succeeded", (job, s3.service.log_tail())
