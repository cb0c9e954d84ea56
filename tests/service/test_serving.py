"""Hot models: the worker's LRU cache bounded in bytes, certificates identical hot, cold,
evicted, after a worker restart and to the batch path's; a model whose stored bytes were
damaged before it was loaded is refused, not served; concurrent requests batched."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

import rab.data as rd
from app.units import first_message_id
from contract.messaging import CERTIFY_TASK
from workers.serving import HotModel, ModelCache

from .conftest import Service, wait_for_job
from .flow import all_certificates

FIELDS = ("prediction", "top_class", "p_a", "p_b", "radius", "abstain")


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


def _ensemble_job(client: httpx.Client, dataset_id: str, seed: int, **changes: Any
                  ) -> dict[str, Any]:
    params = {"sigma": 0.5, "num_models": 4, "models_per_task": 4, "arch": "mlp", "epochs": 2,
              "batch_size": 32, "alpha": 0.05, "num_test": 4, "seed": seed, **changes}
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "method": "ensemble",
                                        "params": params}).json()
    done = wait_for_job(client, job["id"], timeout=300)
    assert done["state"] == "succeeded", done
    return done


def _ensemble_model(client: httpx.Client, dataset_id: str, seed: int) -> str:
    return str(_ensemble_job(client, dataset_id, seed)["links"]["model"])


def _knn_model(client: httpx.Client) -> str:
    """A K-NN model of digits 0 and 1 (its evaluation job run)."""
    dataset = client.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]}).json()
    job = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "method": "knn",
                                        "params": {"sigma": 1.0, "k": 3, "num_test": 4}})
    done = wait_for_job(client, job.json()["id"], timeout=300)
    assert done["state"] == "succeeded", done
    return str(done["links"]["model"])


def _fields(certificates: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(c[f] for f in FIELDS) for c in certificates]


def _certify(client: httpx.Client, model: str, X: np.ndarray) -> dict[str, Any]:
    answer = client.post(f"{model}/certify", json={"inputs": X.reshape(len(X), -1).tolist()})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.mark.services
@pytest.mark.slow
def test_hot_certificates_are_the_batch_paths_through_eviction_and_restart(
    client_a: httpx.Client, service: Service
) -> None:
    """The evaluation job's stored certificates (the batch path: members loaded from the
    store, stacked and voted) equal a certify request's on the same inputs, hot, with a cache
    too small to keep anything (every request cold), and after a worker restart. Soft votes
    (Hoeffding) are compared too: the stacked vote function is the same on both paths."""
    dataset = client_a.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]}).json()
    local = rd.select_classes(rd.load_sklearn("digits"), [0, 1])
    X = local.X_test[:6]
    for seed, bound in ((41, "clopper-pearson"), (42, "hoeffding")):
        job = _ensemble_job(client_a, dataset["id"], seed, num_test=6, bound=bound)
        stored = _fields(all_certificates(client_a, job["id"], "clean"))
        model = str(job["links"]["model"])
        assert _fields(_certify(client_a, model, X)["certificates"]) == stored  # cold
        assert _fields(_certify(client_a, model, X)["certificates"]) == stored  # hot
        service.kill_worker()  # a restart: the cache is gone
        service.start_worker(name="tiny-cache", env={"RAB_MODEL_CACHE_BYTES": "1"})
        try:
            for _ in range(2):  # nothing fits: loaded, verified and stacked every time
                assert _fields(_certify(client_a, model, X)["certificates"]) == stored
        finally:
            service.kill_worker("tiny-cache")
            service.start_worker()
        assert _fields(_certify(client_a, model, X)["certificates"]) == stored


@pytest.mark.services
@pytest.mark.slow
def test_concurrent_requests_for_one_model_are_batched(
    client_a: httpx.Client, service: Service
) -> None:
    """16 requests at once, one input each, for a hot model: the worker certifies them in
    fewer passes than requests (each job's summary names its batch), and every request gets
    the certificate of its own input, the one a single request for all 16 inputs gives, with
    fewer messages than requests."""
    dataset = client_a.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]}).json()
    local = rd.select_classes(rd.load_sklearn("digits"), [0, 1])
    X = local.X_test[:16]
    model = _ensemble_model(client_a, dataset["id"], seed=43)
    together = _certify(client_a, model, X)  # also makes the model hot
    assert together["certificates"] and len(together["certificates"]) == 16
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: _certify(client_a, model, X[i : i + 1]), range(16)))
    for i, answer in enumerate(answers):
        assert _fields(answer["certificates"]) == _fields(together["certificates"][i : i + 1])
    batches = [client_a.get(f"/v1/jobs/{a['job_id']}/summary").json()["batch"]
               for a in answers]
    assert len({b["first_job"] for b in batches}) < 16, batches
    assert all(b["jobs"] == b["inputs"] for b in batches)  # one input per job
    assert max(b["jobs"] for b in batches) > 1
    # a request that found another of its model waiting sent no message (app.certify_queue):
    # the worker received fewer messages than there were jobs; none ran twice
    log = (service.logs / "worker.log").read_text()
    received = [a["job_id"] for a in answers
                if f"{CERTIFY_TASK}[{first_message_id(a['job_id'], 'certify')}] received" in log]
    assert len(received) < len(answers), log[-3000:]
    requests = (service.logs / "api.log").read_text()  # each request's line names its job,
    assert all(f'"job_id": "{a["job_id"]}"' in requests for a in answers)  # message or not
    for answer in answers:
        assert client_a.get(f"/v1/jobs/{answer['job_id']}").json()["attempts"] == 1


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


@pytest.mark.services
def test_a_lone_request_for_a_hot_model_is_certified_unclaimed_and_answered_from_its_signal(
    client_a: httpx.Client, service: Service
) -> None:
    """A K-NN model made hot by a first request (claimed: the worker loads it under a
    lease); a second, alone, is certified from the inputs its message carries, before any
    claim, and finished in one write (``workers.successes``): the same certificates as the
    claimed request's, and its answer, built from the certificates its signal carried
    (``app.replies``), is exactly what was stored; one attempt, counted on job and unit."""
    import sqlalchemy as sa

    model = _knn_model(client_a)
    X = np.random.default_rng(9).uniform(0, 16, (3, 64)).round(2)
    cold, hot = _certify(client_a, model, X), _certify(client_a, model, X)
    assert hot["certificates"] == cold["certificates"]
    stored = client_a.get(f"/v1/jobs/{hot['job_id']}/certificates",
                          params={"subset": "inputs"}).json()["items"]
    assert hot["certificates"] == stored
    log = (service.logs / "worker.log").read_text()
    assert f"job {hot['job_id']}: certified unclaimed (3 inputs)" in log, log[-3000:]
    assert f"job {cold['job_id']}: certified unclaimed" not in log
    requests = [line for line in (service.logs / "api.log").read_text().splitlines()
                if f'"job_id": "{hot["job_id"]}"' in line and '"reply"' in line]
    assert requests and all('"reply": "signal"' in line and '"certificates": "signal"' in line
                            for line in requests), requests
    summary = client_a.get(f"/v1/jobs/{hot['job_id']}/summary").json()
    assert summary["batch"] == {"first_job": hot["job_id"], "jobs": 1, "inputs": 3}
    engine = sa.create_engine(service.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT j.state, j.attempts, j.started_at IS NOT NULL, u.state, u.attempts, "
                "u.lease_owner FROM jobs j JOIN work_units u ON u.job_id = j.id WHERE j.id = :j"
            ), {"j": hot["job_id"]}).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("succeeded", 1, True, "done", 1, None)]


@pytest.mark.services
def test_small_inputs_live_in_the_job_row_and_large_ones_in_the_store(
    client_a: httpx.Client, service: Service
) -> None:
    """A certify request's inputs up to INLINE_INPUTS_BYTES are kept in its job row (no
    object in the store), larger ones in the store; the worker certifies both alike."""
    import sqlalchemy as sa

    from app.orm import INLINE_INPUTS_BYTES

    model = _knn_model(client_a)
    rows = int(INLINE_INPUTS_BYTES / (64 * 4)) + 8  # float32 digits: 256 bytes a row
    X = np.random.default_rng(5).uniform(0, 16, (rows, 64)).astype(np.float32)
    small, large = _certify(client_a, model, X[:3]), _certify(client_a, model, X)
    assert _fields(small["certificates"]) == _fields(large["certificates"][:3])
    engine = sa.create_engine(service.database_url)
    try:
        with engine.connect() as conn:
            stored = dict(conn.execute(
                sa.text("SELECT id, inputs_sha256 FROM jobs WHERE id IN (:a, :b)"),
                {"a": small["job_id"], "b": large["job_id"]}).all())
            inline = dict(conn.execute(
                sa.text("SELECT id, inputs_inline IS NOT NULL FROM jobs WHERE id IN (:a, :b)"),
                {"a": small["job_id"], "b": large["job_id"]}).all())
    finally:
        engine.dispose()
    assert inline == {small["job_id"]: True, large["job_id"]: False}

    def in_store(digest: str) -> bool:
        return (service.store_dir / "objects" / digest[:2] / digest[2:]).is_file()

    assert not in_store(stored[small["job_id"]]) and in_store(stored[large["job_id"]])
