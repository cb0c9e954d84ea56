"""``rab.client.Client`` against the real service (uvicorn + Celery worker on PostgreSQL and
Redis): every typed result is checked against the raw HTTP answer of the same route, and the
metrics against a recomputation from the per-sample certificates."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

import rab.data as rd
from contract.api import job_request
from rab.client import (
    Certificate,
    Client,
    Dataset,
    Job,
    JobFailedError,
    ProblemError,
    UnreachableError,
    WaitTimeoutError,
)

from .conftest import Service, free_port
from .helpers import blobs, npz_bytes

pytestmark = [pytest.mark.services, pytest.mark.slow]

ATTACK = {"kind": "blending", "norm": 1.0, "rate": 0.1, "target": 0}
KNN = {"sigma": 0.5, "k": 3, "num_test": 20}


@pytest.fixture(scope="module")
def client(service: Service, key_a: str) -> Iterator[Client]:
    with Client(service.base_url, key_a) as c:
        yield c


@pytest.fixture(scope="module")
def raw(service: Service, key_a: str) -> Iterator[httpx.Client]:
    """Plain HTTP with the same key: the reference for the client's typed results."""
    with service.client(key_a) as c:
        yield c


@pytest.fixture(scope="module")
def digits(client: Client) -> tuple[Dataset, rd.Dataset]:
    local = rd.select_classes(rd.load_sklearn("digits"), [0, 1])
    return client.create_dataset("digits", classes=[0, 1]), local


@pytest.fixture(scope="module")
def knn_job(client: Client, digits: tuple[Dataset, rd.Dataset]) -> tuple[Job, list[Job]]:
    """A K-NN job under a backdoor, waited for; with every job state the callback saw."""
    dataset, _ = digits
    seen: list[Job] = []
    submitted = client.submit_job(job_request(dataset.id, "knn", KNN, {**ATTACK, "seed": 1}),
                                  idempotency_key="client-test-knn")
    assert submitted.state in ("queued", "running", "succeeded")
    job = client.wait(submitted.id, timeout=240, on_progress=seen.append)
    return job, seen


def test_upload_get_and_list(client: Client, raw: httpx.Client, tmp_path: Path) -> None:
    arrays = blobs(seed=7101)
    path = tmp_path / "blobs.npz"
    path.write_bytes(npz_bytes(**arrays))
    dataset = client.upload_dataset(path, options={"name": "client-blobs"})
    local = rd.from_arrays(*arrays.values(), name="client-blobs")
    assert dataset.sha256 == local.sha256 and dataset.name == "client-blobs"
    assert (dataset.train_size, dataset.test_size) == (60, 20)
    assert dataset.input_shape == (5,) and dataset.num_classes == 2
    assert client.create_dataset(path, name="client-blobs").id == dataset.id  # deduplicated
    assert client.get_dataset(dataset.id) == Dataset.model_validate(
        raw.get(f"/v1/datasets/{dataset.id}").json()
    )
    csv = tmp_path / "blobs.csv"
    rows = np.column_stack([np.vstack([arrays["X_train"], arrays["X_test"]]),
                            np.concatenate([arrays["y_train"], arrays["y_test"]])])
    np.savetxt(csv, rows, delimiter=",", fmt="%.6g")
    from_csv = client.upload_dataset(csv, options={"test_fraction": 0.25})
    assert (from_csv.train_size, from_csv.test_size) == (60, 20)
    listed = list(client.datasets(page_size=1))  # one request per dataset: every page
    everything = raw.get("/v1/datasets", params={"limit": 1000}).json()
    assert everything["next_cursor"] is None
    assert listed == [Dataset.model_validate(d) for d in everything["items"]]
    assert {dataset.id, from_csv.id} <= {d.id for d in listed}


def test_builtin_dataset_is_the_local_one(digits: tuple[Dataset, rd.Dataset]) -> None:
    dataset, local = digits
    assert dataset.sha256 == local.sha256
    assert dataset.test_size == len(local.y_test) and dataset.class_names == ("0", "1")


def test_wait_reports_progress_until_success(knn_job: tuple[Job, list[Job]],
                                             client: Client) -> None:
    job, seen = knn_job
    assert job.state == "succeeded" and job.finished and seen[-1] == job
    assert all(s.id == job.id for s in seen)
    assert [s.state for s in seen].count("succeeded") == 1
    assert job.progress.done == job.progress.total > 0
    again = client.submit_job(
        job_request(job.dataset_id or "", "knn", KNN, {**ATTACK, "seed": 1}),
        idempotency_key="client-test-knn",
    )
    assert again.id == job.id


def _raw_certificates(raw: httpx.Client, job_id: str, subset: str) -> list[Certificate]:
    page = raw.get(f"/v1/jobs/{job_id}/certificates",
                   params={"subset": subset, "limit": 1000}).json()
    assert page["next_cursor"] is None
    return [Certificate.model_validate(c) for c in page["items"]]


def test_certificates_pages_single_route_and_summary(
    knn_job: tuple[Job, list[Job]], client: Client, raw: httpx.Client
) -> None:
    job, _ = knn_job
    summary = client.summary(job.id)
    assert summary.model_dump(mode="json", exclude_none=True) == raw.get(
        f"/v1/jobs/{job.id}/summary").json()
    assert set(summary.sets) == {"clean", "backdoor"}
    for subset, metrics in summary.sets.items():
        certs = list(client.certificates(job.id, subset=subset, page_size=3))  # 7 pages
        assert certs == _raw_certificates(raw, job.id, subset)
        assert [c.index for c in certs] == list(range(metrics.num_points))
        for c in certs[::4]:
            assert client.certificate(job.id, c.index, subset=subset) == c
        correct = np.array([bool(c.correct) for c in certs])
        radius = np.array([c.radius for c in certs])
        assert metrics.accuracy == pytest.approx(correct.mean())
        for r, value in metrics.certified_accuracy.items():
            assert value == pytest.approx(np.mean(correct & (radius > float(r)))), r
        robust = list(client.certificates(job.id, subset=subset, min_radius=0.5, page_size=2))
        assert [c.index for c in robust] == [c.index for c in certs if c.radius >= 0.5]
        wrong = list(client.certificates(job.id, subset=subset, correct=False))
        assert [c.index for c in wrong] == [c.index for c in certs if c.correct is False]
        abstained = list(client.certificates(job.id, subset=subset, abstain=True))
        assert [c.index for c in abstained] == [c.index for c in certs if c.abstain]
    assert summary.attack_success_rate == summary.sets["backdoor"].attack_success_rate


def test_curve_model_and_new_inputs(
    knn_job: tuple[Job, list[Job]], client: Client, raw: httpx.Client,
    digits: tuple[Dataset, rd.Dataset],
) -> None:
    job, _ = knn_job
    dataset, local = digits
    with Image.open(io.BytesIO(client.curve_png(job.id))) as image:
        image.verify()
        assert image.format == "PNG" and min(image.size) > 100
    assert job.model_id is not None
    model = client.get_model(job.model_id)
    assert model == type(model).model_validate(raw.get(f"/v1/models/{job.model_id}").json())
    assert (model.job_id, model.dataset_id, model.dataset_sha256) == (job.id, dataset.id,
                                                                      local.sha256)
    assert model.train_sha256 != local.sha256  # the poisoned training set
    assert model.params == job.params and model.attack == job.attack and model.seeds == job.seeds
    assert model.members == ()  # K-NN has no trained members
    clean = list(client.certificates(job.id))
    answer = client.certify(model.id, local.X_test[:4])  # (4, 1, 8, 8)
    flat = client.certify(model.id, local.X_test[:4].reshape(4, -1))
    for got in (answer.certificates, flat.certificates):
        assert [c.index for c in got] == [0, 1, 2, 3]
        assert [c.prediction for c in got] == [c.prediction for c in clean[:4]]
        assert all(c.subset == "inputs" and c.label is None for c in got)
        np.testing.assert_allclose([c.p_a for c in got], [c.p_a for c in clean[:4]], atol=1e-12)


def test_many_concurrent_certify_requests_all_answer(
    knn_job: tuple[Job, list[Job]], service: Service, key_a: str,
    digits: tuple[Dataset, rd.Dataset],
) -> None:
    # More waiting certify requests than the connection pool's 15 default connections: each
    # must be answered (a waiting request used to hold a connection and block the event loop).
    from concurrent.futures import ThreadPoolExecutor

    job, _ = knn_job
    _, local = digits
    row = local.X_test[:1].reshape(1, -1).tolist()

    def certify_once(_: int) -> int:
        with service.client(key_a) as c:
            return c.post(f"/v1/models/{job.model_id}/certify", json={"inputs": row},
                          timeout=120).status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        codes = list(pool.map(certify_once, range(24)))
    assert codes == [200] * 24
    with service.client(key_a) as c:  # the server still answers at once afterwards
        assert c.get("/healthz", timeout=5).status_code == 200


def test_problems_raise_typed_errors(
    client: Client, service: Service, key_b: str, knn_job: tuple[Job, list[Job]]
) -> None:
    job, _ = knn_job
    with pytest.raises(ProblemError) as missing:
        client.get_job("nope")
    assert (missing.value.status, missing.value.title) == (404, "Not Found")
    assert missing.value.detail == "no job with id 'nope'"
    assert missing.value.instance == "/v1/jobs/nope"
    with pytest.raises(ValidationError, match="sigma"):  # a typed request refuses it first
        job_request(job.dataset_id or "", "knn", {"k": 3})
    with pytest.raises(ProblemError) as invalid:  # only the service knows the data set
        client.submit_job(job_request(job.dataset_id or "", "knn", {**KNN, "num_test": 10**6}))
    assert invalid.value.status == 422 and "exceeds the test set" in invalid.value.detail
    with pytest.raises(ProblemError) as bad_attack:
        client.submit_job(
            job_request(job.dataset_id or "", "knn", KNN, {**ATTACK, "target": 5})
        )
    assert bad_attack.value.status == 422 and "target class 5" in bad_attack.value.detail
    with pytest.raises(ProblemError) as conflict:
        client.cancel_job(job.id)
    assert conflict.value.status == 409 and "already succeeded" in conflict.value.detail
    with Client(service.base_url, key_b) as other, pytest.raises(ProblemError) as isolated:
        other.get_job(job.id)
    assert isolated.value.status == 404
    with Client(service.base_url, None) as anonymous, pytest.raises(ProblemError) as no_key:
        next(anonymous.datasets())
    assert no_key.value.status == 401
    with pytest.raises(FileNotFoundError, match="no dataset file"):
        client.create_dataset("no/such/file.npz")
    with pytest.raises(ProblemError) as unknown:
        client.create_dataset("imagenet")
    assert unknown.value.status == 422 and "digits" in unknown.value.detail


def test_unreachable_service_raises_a_clear_error(service: Service) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "rab_x", timeout=5) as nowhere, pytest.raises(UnreachableError) as err:
        nowhere.get_job("x")
    assert str(err.value).startswith(f"cannot reach the RAB service at {url}")
    with pytest.raises(ValueError, match="http"):
        Client("127.0.0.1:8000", "rab_x")
    assert Client(service.base_url, None).healthy()


def test_wait_timeout_then_cancel(client: Client, digits: tuple[Dataset, rd.Dataset]) -> None:
    dataset, _ = digits
    slow: dict[str, Any] = {"sigma": 0.5, "arch": "mlp", "num_models": 40, "epochs": 50,
                            "models_per_task": 1}
    job = client.submit_job(job_request(dataset.id, "ensemble", slow))
    with pytest.raises(WaitTimeoutError) as late:
        client.wait(job.id, timeout=0.5)
    assert late.value.job.id == job.id and late.value.job.state in ("queued", "running")
    assert client.cancel_job(job.id).state == "cancelled"
    with pytest.raises(JobFailedError) as ended:
        client.wait(job.id, timeout=30)
    assert ended.value.job.state == "cancelled" and job.id in str(ended.value)
    with pytest.raises(ProblemError) as finished:
        client.summary(job.id)
    assert finished.value.status == 409 and "cancelled" in finished.value.detail
