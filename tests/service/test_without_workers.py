"""A service started without workers: per-key quotas over real HTTP (a request past one is
refused with 429, Retry-After and a problem naming the limit, and queues or stores nothing;
queued jobs count), and readiness / queues / job phases that say when no worker consumes a
queue where work waits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import Service, create_key, fresh_pg_database, launch_service

pytestmark = pytest.mark.services

QUOTAS = {"RAB_QUOTA_JOBS": "2", "RAB_QUOTA_MODELS": "10", "RAB_QUOTA_BYTES": "120000"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
            ) -> Iterator[Service]:
    with fresh_pg_database(postgres_url) as url, launch_service(
        tmp_path_factory.mktemp("quotas"), url, redis_url, QUOTAS, worker=False
    ) as service:
        yield service


def _refused(response: httpx.Response, limit: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert limit in response.json()["detail"]


def test_quotas_refuse_with_429_and_store_nothing(limited: Service) -> None:
    with limited.client(create_key(limited.env, "quota")) as client:
        digits = client.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]})
        assert digits.status_code == 201, digits.text  # about 95 kB of arrays
        _refused(client.post("/v1/datasets", json={"builtin": "breast_cancer"}),
                 "RAB_QUOTA_BYTES")
        assert len(client.get("/v1/datasets").json()["items"]) == 1
        dataset_id = digits.json()["id"]

        def job(method: str, params: dict[str, Any]) -> httpx.Response:
            return client.post("/v1/jobs", json={"dataset_id": dataset_id, "method": method,
                                                 "params": params})

        ensemble = {"sigma": 0.5, "arch": "mlp", "epochs": 1}
        _refused(job("ensemble", {**ensemble, "num_models": 11}), "RAB_QUOTA_MODELS")
        assert job("ensemble", {**ensemble, "num_models": 8}).status_code == 202
        _refused(job("ensemble", {**ensemble, "num_models": 3}), "RAB_QUOTA_MODELS")
        assert job("knn", {"sigma": 0.5}).status_code == 202
        _refused(job("knn", {"sigma": 0.5}), "RAB_QUOTA_JOBS")
    with limited.client(create_key(limited.env, "other")) as other:  # quotas are per key
        dataset = other.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]})
        assert dataset.status_code == 201


def test_readiness_and_queues_tell_when_no_worker_consumes(limited: Service) -> None:
    """Work waiting on a queue nobody consumes: /readyz says so (503), GET /v1/queues counts
    it, the job's phase names the queue; once a worker starts, all three clear."""
    operator = limited.client(create_key(limited.env, "ops", "--operator"))
    with limited.client(create_key(limited.env, "queues")) as client, operator:
        digits = client.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]})
        job = client.post("/v1/jobs", json={"dataset_id": digits.json()["id"], "method": "knn",
                                            "params": {"sigma": 0.5, "num_test": 5}}).json()
        assert client.get("/readyz").json() == {"ready": False}
        ready = operator.get("/readyz/details")
        assert ready.status_code == 503
        assert "no worker consumes queue cpu" in ready.json()["checks"]["workers"]
        queues = {q["queue"]: q for q in client.get("/v1/queues").json()}
        assert queues["cpu"]["consumers"] == 0 and queues["cpu"]["pending"] >= 1
        phase = client.get(f"/v1/jobs/{job['id']}").json()["progress"]["phase"]
        assert phase == "waiting: no worker consumes queue cpu"
        limited.start_worker()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if client.get(f"/v1/jobs/{job['id']}").json()["state"] == "succeeded":
                break
            time.sleep(0.5)
        assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "succeeded"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and client.get("/readyz").status_code != 200:
            time.sleep(0.5)
        assert client.get("/readyz").status_code == 200
        queues = {q["queue"]: q for q in client.get("/v1/queues").json()}
        assert queues["cpu"]["consumers"] == 1 and queues["gpu"]["consumers"] == 1
        metrics = operator.get("/metrics").text
        assert 'rab_queue_consumers{queue="cpu"} 1.0' in metrics
