"""The embedded mode: ``rab serve`` as a subprocess (SQLite, local store, filesystem Celery
transport, a worker it starts itself), driven over real HTTP through the K-NN and the ensemble
flows."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.units import first_message_id
from contract.messaging import CERTIFY_TASK

from .conftest import (
    REPO_ROOT,
    create_key,
    free_port,
    service_cli,
    stop,
    wait_for_job,
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


def test_embedded_concurrent_certify_requests_are_batched_and_their_messages_dropped(
    embedded: tuple[str, str, Path],
) -> None:
    """16 certify requests at once for a K-NN model: every one answered, several in one
    batch; SQLite keeps one message per request, and the worker's main loop drops the
    messages of jobs it already certified in a batch (its own revoked set) instead of
    passing each through its task thread."""
    base, key, root = embedded
    X = np.random.default_rng(7).uniform(0, 16, (16, 64)).round(2)
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=120) as client:
        dataset = client.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]})
        job = client.post("/v1/jobs", json={"dataset_id": dataset.json()["id"], "method": "knn",
                                            "params": {"sigma": 1.0, "k": 3, "num_test": 4}})
        done = wait_for_job(client, job.json()["id"], timeout=300)
        assert done["state"] == "succeeded", done

        def certify(x: np.ndarray) -> dict[str, Any]:
            answer = client.post(f"{done['links']['model']}/certify",
                                 json={"inputs": [x.tolist()]})
            assert answer.status_code == 200, answer.text
            return answer.json()  # type: ignore[no-any-return]

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(certify, X))
        batches = [client.get(f"/v1/jobs/{a['job_id']}/summary").json()["batch"]
                   for a in answers]
    assert max(b["jobs"] for b in batches) > 1, batches
    batched = [a["job_id"] for a, b in zip(answers, batches, strict=True)
               if b["first_job"] != a["job_id"]]
    deadline, dropped, log = time.monotonic() + 30, [], ""
    while not dropped and time.monotonic() < deadline:  # delivered after the batch ended
        time.sleep(0.2)
        log = (root / "serve.log").read_text()
        dropped = [j for j in batched if "Discarding revoked task: "
                   f"{CERTIFY_TASK}[{first_message_id(j, 'certify')}]" in log]
    assert dropped, log[-3000:]
