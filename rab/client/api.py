"""``Client``: the certification service's REST API (``/v1``) over HTTP, with typed results.

Every call sends the API key as ``X-API-Key``. An error answer raises ``ProblemError`` with the
fields of the service's problem document; a service that cannot be reached raises
``UnreachableError``. Nothing here imports the service itself.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel

from contract.api import (
    AnyJobIn,
    Certificate,
    CertifyResult,
    Dataset,
    Job,
    JobKind,
    JobState,
    Method,
    ModelInfo,
    ModelSummary,
    Subset,
    Summary,
)
from rab.client.errors import JobFailedError, ProblemError, UnreachableError, WaitTimeoutError

M = TypeVar("M", bound=BaseModel)
__all__ = ["Client", "Method", "ProgressCallback", "Subset"]
ProgressCallback = Callable[[Job], None]
DEFAULT_TIMEOUT_S = 60.0


def _problem(response: httpx.Response) -> ProblemError:
    """The ``ProblemError`` of an error answer (problem+json, or any other body)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "title" in body:
        known = {"status", "title", "detail", "type", "instance"}
        return ProblemError(
            int(body.get("status", response.status_code)), str(body["title"]),
            str(body.get("detail", "")), type=str(body.get("type", "about:blank")),
            instance=body.get("instance"),
            extra={k: v for k, v in body.items() if k not in known},
        )
    detail = response.text.strip()[:500] or "(empty body)"
    return ProblemError(response.status_code, response.reason_phrase or "HTTP error", detail)


class Client:
    """A client of one service for one API key.

    >>> with Client("http://127.0.0.1:8000", "rab_...") as client:  # doctest: +SKIP
    ...     dataset = client.create_dataset("digits", classes=[0, 1])
    ...     job = client.submit_job(job_request(dataset.id, "knn", {"sigma": 1.0, "k": 5}))
    ...     job = client.wait(job.id)
    ...     print(client.summary(job.id).clean)
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.base_url = base_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout,
            transport=httpx.HTTPTransport(retries=1),  # a refused connect is tried twice
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- transport --------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; ``ProblemError`` for a 4xx/5xx answer, ``UnreachableError`` when there
        is no answer."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise UnreachableError(self.base_url, f"no answer in time ({exc!r})") from None
        except httpx.TransportError as exc:
            raise UnreachableError(self.base_url, str(exc) or type(exc).__name__) from None
        if response.is_error:
            raise _problem(response)
        return response

    def _get(self, path: str, model: type[M], **params: Any) -> M:
        return model.model_validate(self._request("GET", path, params=params).json())

    def _pages(self, path: str, model: type[M], params: dict[str, Any]) -> Iterator[M]:
        """Every item of a keyset-paginated list (``next_cursor`` passed back as ``after``)."""
        cursor: str | None = None
        while True:
            query = {k: v for k, v in params.items() if v is not None}
            if cursor is not None:
                query["after"] = cursor
            page = self._request("GET", path, params=query).json()
            for item in page["items"]:
                yield model.model_validate(item)
            cursor = page["next_cursor"]
            if cursor is None:
                return

    # -- operations -------------------------------------------------------------------------

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200 (``UnreachableError`` when nothing answers)."""
        try:
            return self._request("GET", "/healthz").status_code == 200
        except ProblemError:
            return False

    # -- datasets ---------------------------------------------------------------------------

    def upload_dataset(
        self,
        path: str | Path,
        *,
        format: Literal["npz", "csv"] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """Upload an npz (``X_train, y_train, X_test, y_test`` or ``X, y``) or a CSV file (label
        in the last column unless ``options["label_column"]``), streamed from disk. ``format``
        defaults to the file's suffix. Uploading the same content again returns the same
        dataset."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no dataset file at {path}")
        data = {"options": json.dumps(dict(options or {}))}
        if format is not None:
            data["format"] = format
        with path.open("rb") as handle:
            response = self._request(
                "POST", "/v1/datasets", files={"file": (path.name, handle)}, data=data
            )
        return Dataset.model_validate(response.json())

    def builtin_dataset(self, name: str, **options: Any) -> Dataset:
        """A built-in dataset by name (``digits``, ``breast_cancer``, ``spambase``, ``mnist``,
        ``mnist01``, ``cifar``), with options such as ``classes``, ``split_seed``,
        ``train_size``, ``test_size``."""
        body = {"builtin": name, **{k: v for k, v in options.items() if v is not None}}
        return Dataset.model_validate(self._request("POST", "/v1/datasets", json=body).json())

    def create_dataset(self, source: str | Path, **options: Any) -> Dataset:
        """Upload ``source`` if it is an existing file, else ask for the built-in set of that
        name (the service answers with the valid names if there is none); a path that does not
        exist raises ``FileNotFoundError``."""
        path = Path(source)
        if path.is_file():
            fmt = options.pop("format", None)
            return self.upload_dataset(path, format=fmt, options=options)
        if path.suffix or len(path.parts) > 1:  # a built-in name has neither
            raise FileNotFoundError(f"no dataset file at {path}")
        return self.builtin_dataset(str(source), **options)

    def datasets(self, *, page_size: int = 50) -> Iterator[Dataset]:
        """This key's datasets, oldest first (every page)."""
        return self._pages("/v1/datasets", Dataset, {"limit": page_size})

    def get_dataset(self, dataset_id: str) -> Dataset:
        """One dataset of this key."""
        return self._get(f"/v1/datasets/{dataset_id}", Dataset)

    # -- jobs -------------------------------------------------------------------------------

    def submit_job(
        self, request: AnyJobIn, *, idempotency_key: str | None = None
    ) -> Job:
        """Submit an evaluation job (``contract.api.job_request`` builds one): exact smoothed
        K-NN (Theorem 3; its certificates also carry the plain K-NN's poison count), a DNN-RAB
        ensemble or partition aggregation (DPA / FA: poison counts), optionally under a
        backdoor attack. Seeds left
        out are drawn by the service and recorded in the job (``job.seeds``). With an
        ``idempotency_key`` a repeated submission returns the first job."""
        body = request.model_dump(mode="json", exclude_none=True)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._request("POST", "/v1/jobs", json=body, headers=headers)
        return Job.model_validate(response.json())

    def jobs(
        self, *, state: JobState | None = None, method: Method | None = None,
        kind: JobKind | None = None, dataset_id: str | None = None, page_size: int = 50,
    ) -> Iterator[Job]:
        """This key's jobs, newest first (every page, fetched as iterated), optionally only
        those in one state, of one method or kind, or on one dataset."""
        return self._pages("/v1/jobs", Job, {
            "state": state, "method": method, "kind": kind, "dataset_id": dataset_id,
            "limit": page_size,
        })

    def get_job(self, job_id: str) -> Job:
        """State, progress, timings and error of a job."""
        return self._get(f"/v1/jobs/{job_id}", Job)

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a queued or running job (409 ``ProblemError`` if it already finished)."""
        return Job.model_validate(self._request("DELETE", f"/v1/jobs/{job_id}").json())

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        poll_interval: float = 0.25,
        max_interval: float = 5.0,
        backoff: float = 1.5,
    ) -> Job:
        """Poll a job until it succeeds and return it; ``on_progress(job)`` sees every poll.

        The interval starts at ``poll_interval`` and grows by ``backoff`` up to ``max_interval``
        while nothing changes; it starts over when the progress moves. Raises
        ``JobFailedError`` when the job fails or is cancelled and ``WaitTimeoutError`` when it
        is unfinished after ``timeout`` seconds.
        """
        if poll_interval <= 0 or max_interval < poll_interval or backoff < 1:
            raise ValueError("need 0 < poll_interval <= max_interval and backoff >= 1")
        deadline = None if timeout is None else time.monotonic() + timeout
        interval, seen = poll_interval, None
        while True:
            job = self.get_job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.state == "succeeded":
                return job
            if job.finished:
                raise JobFailedError(job)
            state = (job.state, job.progress)
            interval = poll_interval if state != seen else min(interval * backoff, max_interval)
            seen = state
            if deadline is not None and timeout is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(job, timeout)
                time.sleep(min(interval, left))
            else:
                time.sleep(interval)

    # -- results ----------------------------------------------------------------------------

    def certificates(
        self,
        job_id: str,
        *,
        subset: Subset = "clean",
        min_radius: float | None = None,
        correct: bool | None = None,
        abstain: bool | None = None,
        page_size: int = 500,
    ) -> Iterator[Certificate]:
        """A job's per-sample certificates in index order, filtered, across every page."""
        params = {
            "subset": subset, "min_radius": min_radius, "limit": page_size,
            "correct": None if correct is None else str(correct).lower(),
            "abstain": None if abstain is None else str(abstain).lower(),
        }
        return self._pages(f"/v1/jobs/{job_id}/certificates", Certificate, params)

    def certificate(self, job_id: str, index: int, *, subset: Subset = "clean") -> Certificate:
        """One certified prediction of a job."""
        return self._get(f"/v1/jobs/{job_id}/certificates/{index}", Certificate, subset=subset)

    def summary(self, job_id: str) -> Summary:
        """Accuracy, certified accuracy and rate at each radius, clean/backdoor accuracy and
        attack success rate of a succeeded job."""
        return self._get(f"/v1/jobs/{job_id}/summary", Summary)

    def curve_png(self, job_id: str) -> bytes:
        """The certified-accuracy-against-radius plot of a succeeded job, as PNG bytes."""
        return self._request("GET", f"/v1/jobs/{job_id}/curve.png").content

    def count_curve_png(self, job_id: str) -> bytes:
        """The certified-accuracy-against-poison-count plot of a succeeded partition or K-NN
        job, as PNG bytes."""
        return self._request("GET", f"/v1/jobs/{job_id}/count_curve.png").content

    # -- models -----------------------------------------------------------------------------

    def models(
        self, *, method: Method | None = None, dataset_id: str | None = None,
        page_size: int = 50,
    ) -> Iterator[ModelSummary]:
        """This key's models, newest first (every page, fetched as iterated), optionally only
        those of one method or dataset; ``get_model`` has each one's members."""
        return self._pages("/v1/models", ModelSummary, {
            "method": method, "dataset_id": dataset_id, "limit": page_size,
        })

    def get_model(self, model_id: str) -> ModelInfo:
        """Provenance of a model: dataset and training-set hashes, parameters, code version,
        member hashes and noise seeds."""
        return self._get(f"/v1/models/{model_id}", ModelInfo)

    def certify(
        self,
        model_id: str,
        inputs: Sequence[Any] | np.ndarray,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> CertifyResult:
        """Certified predictions for new inputs, shape ``(m, *input_shape)`` or flattened.

        The inputs are sent as an npz upload holding one float32 array ``X`` (no pickle). The
        service certifies in float32 whatever it is sent, so this gives exactly the
        certificates of the same inputs sent as JSON, in 4 bytes a number instead of up to 20
        characters of text to format and parse. The service answers at once when it finishes
        within its wait; otherwise this waits for the certify job (as ``wait``) and reads its
        certificates.
        """
        buffer = io.BytesIO()
        np.savez(buffer, X=np.asarray(inputs, dtype=np.float32))
        response = self._request(
            "POST", f"/v1/models/{model_id}/certify",
            files={"file": ("inputs.npz", buffer.getvalue(), "application/octet-stream")},
        )
        if response.status_code == 200:
            return CertifyResult.model_validate(response.json())
        job = Job.model_validate(response.json())
        self.wait(job.id, timeout=timeout, on_progress=on_progress)
        return CertifyResult(
            job_id=job.id, certificates=tuple(self.certificates(job.id, subset="inputs"))
        )
