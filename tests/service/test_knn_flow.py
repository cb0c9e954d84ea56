"""Full K-NN flow on real Spambase through the production stack (PostgreSQL, Redis, a Celery
worker process, uvicorn): upload the UCI file over HTTP, certify with a backdoor attack, read
everything back and compare with the library run in-process."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import rab.data as rd

from .flow import run_knn_flow
from .helpers import upload

pytestmark = [pytest.mark.services, pytest.mark.slow]

SPLIT = {"test_fraction": 0.2, "split_seed": 0}
PARAMS = {"sigma": 1.0, "k": 5, "spread": 0.1, "num_test": 24}
ATTACK = {"pattern": "one_pixel", "norm": 0.1, "poison_fraction": 0.02, "target": 0}


def test_knn_on_spambase_with_attack(client_a: httpx.Client, shared_data: Path) -> None:
    path = shared_data / "spambase.data"
    response = upload(client_a, path.read_bytes(), "spambase.csv", SPLIT)
    assert response.status_code in (200, 201), response.text
    dataset = response.json()
    local = rd.load_csv(path, **SPLIT)
    assert dataset["sha256"] == local.sha256
    assert dataset["train_size"] == 3680 and dataset["test_size"] == 921
    job = run_knn_flow(client_a, dataset["id"], local, PARAMS, ATTACK, seed=7)
    assert job["links"]["model"].startswith("/v1/models/")
