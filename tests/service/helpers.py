"""Small builders shared by the service tests (synthetic datasets as npz/CSV bytes)."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np


def npz_bytes(**arrays: Any) -> bytes:
    """An npz archive of ``arrays`` (object arrays are pickled by numpy, as an attacker would)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def blobs(seed: int, n_train: int = 60, n_test: int = 20, dim: int = 5) -> dict[str, np.ndarray]:
    """Two well-separated Gaussian classes (float32 features, int labels)."""
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 2
        X = rng.normal(size=(n, dim)) + 4.0 * y[:, None]
        return X.astype(np.float32), y.astype(np.int64)

    X_train, y_train = draw(n_train)
    X_test, y_test = draw(n_test)
    return {"X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test}


def upload(
    client: httpx.Client, content: bytes, filename: str, options: dict[str, Any] | None = None,
    fmt: str | None = None,
) -> httpx.Response:
    """POST /v1/datasets as multipart/form-data over real HTTP."""
    data = {}
    if options is not None:
        data["options"] = json.dumps(options)
    if fmt is not None:
        data["format"] = fmt
    return client.post("/v1/datasets", files={"file": (filename, content)}, data=data)


def is_problem(response: httpx.Response, status: int | None = None) -> bool:
    """A 4xx problem+json answer with a non-empty detail."""
    body = response.json()
    return (
        400 <= response.status_code < 500
        and (status is None or response.status_code == status)
        and response.headers["content-type"].startswith("application/problem+json")
        and body["status"] == response.status_code
        and bool(body["detail"])
    )


def add_finished_job(session: Any, owner_id: str, certificates: list[dict[str, Any]]) -> str:
    """A succeeded K-NN job of ``owner_id`` holding the given clean-set certificate rows
    (``app.orm.Certificate`` columns but ``job_id`` and ``subset``), written straight to the
    database; its id."""
    from app.orm import Certificate, Job

    job = Job(owner_id=owner_id, kind="evaluate", method="knn", params={}, attack=None,
              max_attempts=1, request_sha256="0" * 64, state="succeeded")
    session.add(job)
    session.flush()
    session.add_all(Certificate(job_id=job.id, subset="clean", **row) for row in certificates)
    return str(job.id)
