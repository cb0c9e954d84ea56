"""The embedded mode: ``rab serve`` as a subprocess (SQLite, local store, filesystem Celery
transport, a worker it starts itself), driven over real HTTP through the K-NN and the ensemble
flows."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import rab.data as rd

from .conftest import (
    REPO_ROOT,
    create_key,
    free_port,
    service_cli,
    stop,
    wait_healthy,
)
from .flow import run_ensemble_flow, run_knn_flow

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    root = tmp_path_factory.mktemp("embedded")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAB_")}
    env["RAB_DATA_DIR"] = str(root / "data")
    key = create_key(env, "embedded")
    port = free_port()
    log = root / "serve.log"
    process = subprocess.Popen(
        service_cli("serve", "--port", str(port)), env=env, cwd=REPO_ROOT,
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process, log)
        yield base, key, root
    finally:
        stop(process)
    assert process.returncode is not None
    # serve stopped the worker it started (its log says so) instead of orphaning it
    assert "Warm shutdown" in log.read_text()


def test_embedded_mode_runs_without_servers(embedded: tuple[str, str, Path]) -> None:
    base, key, root = embedded
    assert (root / "data" / "rab.db").is_file()
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200, ready.text
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as client:
        response = client.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]})
        assert response.status_code == 201, response.text
        local = rd.select_classes(rd.load_sklearn("digits"), [0, 1])
        assert response.json()["sha256"] == local.sha256
        params = {"sigma": 0.5, "k": 3, "num_test": 12}
        run_knn_flow(client, response.json()["id"], local, params)
        ensemble = {"sigma": 0.5, "num_models": 6, "arch": "mlp", "epochs": 10,
                    "batch_size": 32, "models_per_task": 2, "alpha": 0.05, "num_test": 12}
        run_ensemble_flow(client, response.json()["id"], local, ensemble, seed=5,
                          min_accuracy=0.75)
