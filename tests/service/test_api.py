"""The HTTP API against a real PostgreSQL, Redis, Celery worker and uvicorn server: uploads,
deduplication, every bad-input kind (4xx problem+json, nothing stored), key isolation and
idempotent job submission."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy

from .conftest import UPLOAD_LIMIT, Service, wait_for_job
from .helpers import blobs, is_problem, npz_bytes, upload

pytestmark = pytest.mark.services


def _stored(service: Service) -> tuple[int, int, int, int]:
    """(dataset rows, job rows, stored files, temporary files): what a bad request must not add."""
    engine = sqlalchemy.create_engine(service.database_url)
    try:
        with engine.connect() as conn:
            datasets = conn.execute(sqlalchemy.text("SELECT count(*) FROM datasets")).scalar_one()
            jobs = conn.execute(sqlalchemy.text("SELECT count(*) FROM jobs")).scalar_one()
    finally:
        engine.dispose()
    objects = sum(1 for p in (service.store_dir / "objects").rglob("*") if p.is_file())
    temporary = sum(1 for _ in (service.store_dir / "tmp").iterdir())
    return datasets, jobs, objects, temporary


@pytest.fixture
def nothing_stored(service: Service) -> Iterator[None]:
    """Assert that the test adds no dataset, job, stored object or temporary file."""
    before = _stored(service)
    yield
    assert _stored(service) == before


def _refs(node: Any) -> Iterator[str]:
    """Every "$ref" target in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_openapi_documents_the_v1_api(service: Service) -> None:
    spec = httpx.get(f"{service.base_url}/openapi.json").json()
    assert {"/v1/datasets", "/v1/jobs", "/v1/jobs/{job_id}/certificates"} <= set(spec["paths"])
    body = spec["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    schemas = spec["components"]["schemas"]
    # the document is self-contained: every reference names a defined schema
    missing = {r for r in _refs(spec) if r.removeprefix("#/components/schemas/") not in schemas}
    assert not missing
    # every error of every /v1 call is documented as the problem+json document it is
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert {"401", "422"} <= statuses, (method, path)
            assert "{" not in path or "404" in statuses, (method, path)
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    content = response["content"]
                    assert set(content) == set(problem), (method, path, status)
                    document = content["application/problem+json"]
                    assert document["schema"] == problem["application/problem+json"]["schema"]
                    assert document["example"]["status"] == int(status), (method, path, status)
    assert "HTTPValidationError" not in schemas  # FastAPI's own shape is never sent
    for name in ("KnnJobIn", "EnsembleJobIn", "PartitionJobIn", "BuiltinDatasetIn", "CertifyIn"):
        assert schemas[name].get("examples"), name
    summary = spec["paths"]["/v1/jobs/{job_id}/summary"]["get"]["responses"]["200"]
    assert summary["content"]["application/json"]["schema"]["$ref"].endswith("/Summary")


def test_requests_without_a_valid_key_are_401(service: Service) -> None:
    for key in (None, "rab_not-a-key"):
        with service.client(key) as client:
            response = client.get("/v1/datasets")
        assert is_problem(response, 401)


def test_npz_upload_is_validated_described_and_deduplicated(
    client_a: httpx.Client, client_b: httpx.Client, service: Service
) -> None:
    arrays = blobs(seed=1)
    content = npz_bytes(**arrays)
    first = upload(client_a, content, "blobs.npz")
    assert first.status_code == 201, first.text
    body = first.json()
    assert first.headers["location"] == f"/v1/datasets/{body['id']}"
    assert body["input_shape"] == [5]
    assert body["train_size"] == 60 and body["test_size"] == 20
    assert body["train_class_counts"] == np.bincount(arrays["y_train"]).tolist()
    assert body["test_class_counts"] == np.bincount(arrays["y_test"]).tolist()
    assert body["class_names"] == ["0", "1"]
    _, _, objects_before, _ = _stored(service)
    again = upload(client_a, content, "other-name.npz")
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    # another key uploading the same content gets its own row but no second stored copy
    theirs = upload(client_b, content, "blobs.npz")
    assert theirs.status_code == 201 and theirs.json()["id"] != body["id"]
    assert theirs.json()["sha256"] == body["sha256"]
    assert _stored(service)[2] == objects_before
    assert client_a.get(f"/v1/datasets/{body['id']}").json() == body


def test_dataset_listing_is_paginated(client_a: httpx.Client) -> None:
    ids = {upload(client_a, npz_bytes(**blobs(seed=s)), "b.npz").json()["id"] for s in (11, 12, 13)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"after": cursor} if cursor else {})}
        page = client_a.get("/v1/datasets", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids <= set(seen) and len(seen) == len(set(seen))


def test_csv_upload_with_class_selection(client_a: httpx.Client) -> None:
    rng = np.random.default_rng(3)
    X = rng.integers(0, 50, size=(90, 4))
    y = np.arange(90) % 3
    csv = "\n".join(",".join(map(str, [*row, label])) for row, label in zip(X, y, strict=True))
    response = upload(
        client_a, csv.encode(), "table.csv", {"classes": [2, 0], "test_fraction": 0.25}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["class_names"] == ["2", "0"]
    assert body["train_size"] + body["test_size"] == 60


def test_builtin_dataset(client_a: httpx.Client) -> None:
    response = client_a.post("/v1/datasets", json={"builtin": "breast_cancer"})
    assert response.status_code in (200, 201), response.text
    body = response.json()
    assert body["input_shape"] == [30] and body["train_size"] + body["test_size"] == 569


def _bad_uploads() -> dict[str, tuple[bytes, str, dict[str, Any] | None]]:
    good = blobs(seed=2)
    nan = {**good, "X_train": good["X_train"].copy()}
    nan["X_train"][3, 1] = np.nan
    return {
        "corrupt npz": (np.random.default_rng(0).bytes(2000), "x.npz", None),
        "pickled npz": (
            npz_bytes(**{**good, "y_train": np.array(list(good["y_train"]), dtype=object)}),
            "x.npz", None,
        ),
        "NaN feature": (npz_bytes(**nan), "x.npz", None),
        "wrong shapes": (
            npz_bytes(**{**good, "X_test": np.zeros((20, 4), np.float32)}), "x.npz", None
        ),
        "label count mismatch": (
            npz_bytes(**{**good, "y_train": good["y_train"][:-1]}), "x.npz", None
        ),
        "missing arrays": (npz_bytes(X_train=good["X_train"]), "x.npz", None),
        "ragged csv": (b"1,2,0\n3,4,1\n5,1\n", "x.csv", None),
        "non-numeric csv": (b"1,2,0\n3,four,1\n5,6,1\n", "x.csv", None),
        "fractional csv label": (b"1,2,0\n3,4,1.5\n5,6,1\n", "x.csv", None),
        "unknown format": (b"hello", "x.txt", None),
        "bad options": (npz_bytes(**good), "x.npz", {"test_fraction": 3}),
        "unknown option": (npz_bytes(**good), "x.npz", {"colour": "red"}),
        "unknown class": (npz_bytes(**good), "x.npz", {"classes": [0, 7]}),
    }


@pytest.mark.parametrize("case", sorted(_bad_uploads()))
def test_bad_upload_is_4xx_and_stores_nothing(
    case: str, client_a: httpx.Client, nothing_stored: None
) -> None:
    content, filename, options = _bad_uploads()[case]
    response = upload(client_a, content, filename, options)
    assert is_problem(response), (case, response.status_code, response.text)


def test_oversized_upload_is_413_and_stores_nothing(
    client_a: httpx.Client, nothing_stored: None
) -> None:
    big = np.random.default_rng(0).bytes(UPLOAD_LIMIT + 1)
    response = upload(client_a, big, "big.npz")
    assert is_problem(response, 413)

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        boundary = b"b0undary"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
        yield b'filename="big.npz"\r\n\r\n'
        for _ in range(8):
            yield b"\0" * (UPLOAD_LIMIT // 4)
        yield b"\r\n--" + boundary + b"--\r\n"

    response = client_a.post(
        "/v1/datasets", content=chunked(),
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert is_problem(response, 413)


def test_unknown_builtin_and_missing_file_are_422(
    client_a: httpx.Client, nothing_stored: None
) -> None:
    assert is_problem(client_a.post("/v1/datasets", json={"builtin": "imagenet"}), 422)
    assert is_problem(client_a.post("/v1/datasets", data={"format": "npz"}, files={}), 415)
    response = client_a.post("/v1/datasets", files={"other": ("a", b"1")})
    assert is_problem(response, 422)


@pytest.fixture(scope="module")
def dataset_a(service: Service, key_a: str) -> dict[str, Any]:
    with service.client(key_a) as client:
        response = upload(client, npz_bytes(**blobs(seed=5)), "jobs.npz")
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


def _knn(dataset_id: str, **params: Any) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id, "method": "knn",
        "params": {"sigma": 1.0, "k": 3, "num_test": 4, **params},
    }


def test_bad_job_requests_are_4xx_and_store_nothing(
    client_a: httpx.Client, dataset_a: dict[str, Any], nothing_stored: None
) -> None:
    did = dataset_a["id"]
    cases = {
        "unknown dataset": _knn("0" * 32),
        "unknown method": {**_knn(did), "method": "svm"},
        "sigma zero": _knn(did, sigma=0),
        "sigma far below the data's scale": _knn(did, sigma=1e-8),
        "sigma below any float level": _knn(did, sigma=1e-300),
        "sigma NaN": {**_knn(did), "params": {"sigma": "NaN", "k": 1}},
        "k zero": _knn(did, k=0),
        "k too big": _knn(did, k=1000),
        "num_test beyond test set": _knn(did, num_test=10_000),
        "unknown parameter": _knn(did, epochs=3),
        "negative seed": {
            **_knn(did), "attack": {"kind": "one_pixel", "norm": 0.1, "rate": 0.1,
                                    "target": 0, "seed": -1},
        },
        "seed beyond 63 bits": _knn(did, seed=2**63),
        "attack target not a class": {
            **_knn(did), "attack": {"kind": "one_pixel", "norm": 0.1,
                                    "rate": 0.1, "target": 5},
        },
        "attack poisons nobody": {
            **_knn(did), "attack": {"kind": "one_pixel", "norm": 0.1,
                                    "rate": 0.001, "target": 0},
        },
        "attack unknown pattern": {
            **_knn(did), "attack": {"kind": "sticker", "norm": 0.1,
                                    "rate": 0.1, "target": 0},
        },
    }
    for case, body in cases.items():
        response = client_a.post("/v1/jobs", json=body)
        assert is_problem(response), (case, response.status_code, response.text)
    assert is_problem(client_a.post("/v1/jobs", content=b"{not json"), 422)


def test_keys_are_isolated(
    client_a: httpx.Client, client_b: httpx.Client, dataset_a: dict[str, Any]
) -> None:
    did = dataset_a["id"]
    assert is_problem(client_b.get(f"/v1/datasets/{did}"), 404)
    assert did not in {d["id"] for d in client_b.get("/v1/datasets").json()["items"]}
    assert is_problem(client_b.post("/v1/jobs", json=_knn(did)), 422)
    job = client_a.post("/v1/jobs", json=_knn(did))
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    for path in ("", "/certificates", "/certificates/0", "/summary", "/curve.png"):
        assert is_problem(client_b.get(f"/v1/jobs/{job_id}{path}"), 404), path
    assert is_problem(client_b.delete(f"/v1/jobs/{job_id}"), 404)
    assert client_a.get(f"/v1/jobs/{job_id}").status_code == 200
    model = wait_for_job(client_a, job_id)["links"]["model"]
    assert is_problem(client_b.get(model), 404)
    assert is_problem(client_b.post(f"{model}/certify", json={"inputs": [[0.0, 0.0]]}), 404)
    assert client_a.get(model).status_code == 200


def test_oversized_json_bodies_are_413_and_store_nothing(
    client_a: httpx.Client, dataset_a: dict[str, Any], service: Service
) -> None:
    model = wait_for_job(client_a, client_a.post("/v1/jobs", json=_knn(dataset_a["id"])).json()
                         ["id"])["links"]["model"]
    before = _stored(service)
    padding = " " * (UPLOAD_LIMIT + 1)  # valid JSON, only too long
    builtin = client_a.post("/v1/datasets", content=f'{{"builtin": "digits"}}{padding}',
                            headers={"content-type": "application/json"})
    assert is_problem(builtin, 413)
    certify = client_a.post(f"{model}/certify", content=f'{{"inputs": [[0, 0]]}}{padding}',
                            headers={"content-type": "application/json"})
    assert is_problem(certify, 413)

    def chunked() -> Iterator[bytes]:  # no Content-Length: cut off while streaming
        yield b'{"inputs": [[0, 0]]}'
        for _ in range(8):
            yield b" " * (UPLOAD_LIMIT // 4)

    streamed = client_a.post(f"{model}/certify", content=chunked(),
                             headers={"content-type": "application/json"})
    assert is_problem(streamed, 413)
    assert _stored(service) == before


def test_idempotent_resubmission(
    client_a: httpx.Client, client_b: httpx.Client, dataset_a: dict[str, Any], service: Service
) -> None:
    key = hashlib.sha256(b"test_idempotent_resubmission").hexdigest()
    body = _knn(dataset_a["id"], num_test=2)
    first = client_a.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    assert first.headers["location"] == f"/v1/jobs/{first.json()['id']}"
    jobs_before = _stored(service)[1]
    second = client_a.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["location"] == first.headers["location"]
    assert _stored(service)[1] == jobs_before
    changed = client_a.post(
        "/v1/jobs", json=_knn(dataset_a["id"], num_test=3), headers={"Idempotency-Key": key}
    )
    assert is_problem(changed, 409)
    # the same Idempotency-Key from another API key is a separate request
    theirs = upload(client_b, npz_bytes(**blobs(seed=5)), "jobs.npz").json()
    other = client_b.post("/v1/jobs", json=_knn(theirs["id"]), headers={"Idempotency-Key": key})
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    assert _stored(service)[1] == jobs_before + 1


def test_cancel(client_a: httpx.Client, dataset_a: dict[str, Any]) -> None:
    # an ensemble far too large to finish before the DELETE: the cancel always wins, and the
    # worker stops at its next progress report instead of training the other models
    params = {"sigma": 1.0, "num_models": 1000, "arch": "mlp", "epochs": 1,
              "models_per_task": 1000, "num_test": 4}
    body = {"dataset_id": dataset_a["id"], "method": "ensemble", "params": params}
    job = client_a.post("/v1/jobs", json=body).json()
    cancelled = client_a.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert is_problem(client_a.delete(f"/v1/jobs/{job['id']}"), 409)
    assert is_problem(client_a.get(f"/v1/jobs/{job['id']}/summary"), 409)
    time.sleep(3)  # the worker has claimed the task, trained a model, and reported it
    done = client_a.get(f"/v1/jobs/{job['id']}").json()["progress"]["done"]
    time.sleep(2)
    after = client_a.get(f"/v1/jobs/{job['id']}").json()
    assert after["state"] == "cancelled" and after["progress"]["done"] == done <= 1


def test_concurrent_resubmissions_create_one_job(
    service: Service, key_a: str, dataset_a: dict[str, Any]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    body = _knn(dataset_a["id"], num_test=1)
    headers = {"Idempotency-Key": "concurrent-" + dataset_a["id"]}

    def submit(_: int) -> httpx.Response:
        with service.client(key_a) as client:
            return client.post("/v1/jobs", json=body, headers=headers)

    jobs_before = _stored(service)[1]
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(submit, range(6)))
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert _stored(service)[1] == jobs_before + 1


def test_builtin_mnist01_subset(client_a: httpx.Client, shared_data: Any) -> None:
    response = client_a.post(
        "/v1/datasets", json={"builtin": "mnist01", "train_size": 50, "test_size": 10}
    )
    assert response.status_code in (200, 201), response.text
    body = response.json()
    assert body["input_shape"] == [1, 28, 28] and body["feature_range"] == [0.0, 1.0]
    assert (body["train_size"], body["test_size"]) == (50, 10)
    assert body["provenance"]["source"]["kind"] == "builtin"


def test_a_failed_job_can_be_retried(client_a: httpx.Client, dataset_a: dict[str, Any]) -> None:
    """A job that fails in its worker (sigma so small that the Poisson mixture of the smoothed
    K-NN is too large to tabulate for these points: the API cannot know it from the dataset's
    shape alone) is resumed by
    POST /retry with a fresh attempt budget, and fails again for the same reason; a job that
    did not fail cannot be retried."""
    body = {"dataset_id": dataset_a["id"], "method": "knn",
            "params": {"sigma": 3e-5, "k": 3, "num_test": 2}}
    job = wait_for_job(client_a, client_a.post("/v1/jobs", json=body).json()["id"])
    assert job["state"] == "failed" and "Poisson mixture" in job["error"], job
    retried = client_a.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["state"] == "queued" and retried.json()["error"] is None
    again = wait_for_job(client_a, job["id"])
    assert again["state"] == "failed" and again["attempts"] == job["attempts"] + 1
    assert is_problem(client_a.post(f"/v1/jobs/{'0' * 32}/retry"), 404)
    good = client_a.post("/v1/jobs", json=_knn(dataset_a["id"])).json()
    assert wait_for_job(client_a, good["id"])["state"] == "succeeded"
    assert is_problem(client_a.post(f"/v1/jobs/{good['id']}/retry"), 409)
