"""Hot models: the worker's LRU cache bounded in bytes, certificates identical hot and cold,
and a model whose stored bytes were damaged before it was loaded is refused, not served."""

from __future__ import annotations

import os
from typing import Any

import httpx
import numpy as np
import pytest

import rab.data as rd
from workers.serving import HotModel, ModelCache

from .conftest import Service, wait_for_job


def test_the_cache_keeps_the_recently_used_models_within_its_bound() -> None:
    cache = ModelCache(max_bytes=100)
    loads: list[str] = []

    def loader(name: str, size: int) -> Any:
        return lambda: loads.append(name) or HotModel(None, name, size)

    assert cache.get("a", loader("a", 60)).train == "a"
    assert cache.get("a", loader("a", 60)).train == "a"  # hot: not loaded again
    cache.get("b", loader("b", 30))
    cache.get("a", loader("a", 60))  # a is now the most recent
    cache.get("c", loader("c", 30))  # 120 > 100: b, the least recently used, goes
    cache.get("b", loader("b", 30))
    assert loads == ["a", "b", "c", "b"] and cache.nbytes <= 100
    cache.get("huge", loader("huge", 1000))  # served, never kept
    cache.get("huge", loader("huge", 1000))
    assert loads[-2:] == ["huge", "huge"] and cache.nbytes <= 100


def _ensemble_model(client: httpx.Client, dataset_id: str, seed: int) -> str:
    params = {"sigma": 0.5, "num_models": 4, "models_per_task": 4, "arch": "mlp", "epochs": 2,
              "batch_size": 32, "alpha": 0.05, "num_test": 4, "seed": seed}
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "method": "ensemble",
                                        "params": params}).json()
    done = wait_for_job(client, job["id"], timeout=300)
    assert done["state"] == "succeeded", done
    return str(done["links"]["model"])


@pytest.mark.services
@pytest.mark.slow
def test_hot_and_cold_answers_agree_and_damaged_bytes_are_refused(
    client_a: httpx.Client, service: Service
) -> None:
    dataset = client_a.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]}).json()
    local = rd.select_classes(rd.load_sklearn("digits"), [0, 1])
    inputs = {"inputs": local.X_test[:5].reshape(5, -1).tolist()}
    model = _ensemble_model(client_a, dataset["id"], seed=31)
    answers = [client_a.post(f"{model}/certify", json=inputs) for _ in range(3)]
    assert all(a.status_code == 200 for a in answers), answers[0].text
    first = answers[0].json()["certificates"]
    for later in answers[1:]:  # hot: the same certificates
        assert later.json()["certificates"] == first
    assert np.isfinite([float(c["p_a"]) for c in first]).all()
    # another model, damaged in the store before anything loads it: refused, not served
    damaged = _ensemble_model(client_a, dataset["id"], seed=32)
    member = client_a.get(damaged).json()["members"][0]["state_sha256"]
    path = service.store_dir / "objects" / member[:2] / member[2:]
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of the weights, flipped
    path.write_bytes(bytes(data))
    refused = client_a.post(f"{damaged}/certify", json=inputs)
    assert refused.status_code == 422, refused.text
    assert "CorruptObjectError" in refused.json()["detail"]
