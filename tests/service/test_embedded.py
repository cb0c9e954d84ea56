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

from .conftest import (
    REPO_ROOT,
    create_key,
    free_port,
    service_cli,
    stop,
    wait_healthy,
)
from .flow import MNIST01_ENSEMBLE, run_ensemble_flow, run_spambase_knn_flow, upload_mnist01

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


def test_embedded_mode_runs_without_servers(
    embedded: tuple[str, str, Path], shared_data: Path
) -> None:
    # the same flows, on the same data, as against PostgreSQL + Redis + a separate worker
    base, key, root = embedded
    assert (root / "data" / "rab.db").is_file()
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200, ready.text
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as client:
        run_spambase_knn_flow(client, shared_data)
        dataset, local = upload_mnist01(client, shared_data)
        run_ensemble_flow(client, dataset["id"], local, MNIST01_ENSEMBLE, seed=5,
                          min_accuracy=0.9)
