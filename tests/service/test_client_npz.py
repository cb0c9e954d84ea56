"""``rab.client.Client.certify`` uploads its inputs as an npz, against the real service
(uvicorn + Celery worker on PostgreSQL and Redis): the certificates are exactly those of the same
inputs sent as JSON."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

import rab.data as rd
from contract.api import job_request
from rab.client import Certificate, Client

from .conftest import Service

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(service: Service, key_a: str) -> Iterator[Client]:
    with Client(service.base_url, key_a) as c:
        yield c


def test_certify_uploads_npz_with_the_certificates_of_json(
    client: Client, service: Service, key_a: str
) -> None:
    dataset = client.create_dataset("digits", classes=[0, 1])
    request = job_request(dataset.id, "knn", {"sigma": 1, "k": 3, "num_test": 5})
    job = client.wait(client.submit_job(request).id, timeout=240)
    assert job.model_id is not None
    local = rd.select_classes(rd.load_sklearn("digits"), [0, 1])
    # float64 inputs off the float32 grid: both ways must round them to float32 alike
    rng = np.random.default_rng(0)
    inputs = local.X_test[:12].astype(np.float64) + rng.uniform(0, 1e-3, (12, 1, 8, 8))
    sent: list[httpx.Request] = []
    client._http.event_hooks["request"].append(sent.append)  # what goes on the wire
    via_npz = client.certify(job.model_id, inputs)
    client._http.event_hooks["request"].remove(sent.append)
    (request,) = sent
    assert request.headers["content-type"].startswith("multipart/form-data")
    part = request.read().split(b"\r\n\r\n", 1)[1]  # the file part's bytes, then the boundary
    with np.load(io.BytesIO(part[: part.rindex(b"\r\n--")]), allow_pickle=False) as archive:
        assert archive.files == ["X"]
        np.testing.assert_array_equal(archive["X"], inputs.astype(np.float32))
    with service.client(key_a) as raw:
        answer = raw.post(f"/v1/models/{job.model_id}/certify",
                          json={"inputs": inputs.reshape(12, -1).tolist()}, timeout=120)
    assert answer.status_code == 200, answer.text
    via_json = tuple(Certificate.model_validate(c) for c in answer.json()["certificates"])
    assert via_npz.job_id != answer.json()["job_id"]
    assert [c.index for c in via_npz.certificates] == list(range(12))
    assert via_npz.certificates == via_json  # every field, p_a and radius bit for bit
