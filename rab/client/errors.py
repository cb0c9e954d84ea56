"""Exceptions of the HTTP client: a problem document, an unreachable service, a job that did
not succeed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contract.api import Job


class ServiceError(Exception):
    """Base class of every error the client raises for an expected failure."""


class UnreachableError(ServiceError):
    """The service could not be reached (connection refused, DNS, TLS) or did not answer in
    time."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"cannot reach the RAB service at {base_url}: {reason}")
        self.base_url = base_url
        self.reason = reason


class ProblemError(ServiceError):
    """An error answer of the API: the fields of its RFC 9457 ``application/problem+json``
    document (``status``, ``title``, ``detail``, ``type``, ``instance``; anything else, such
    as the validation ``errors``, in ``extra``)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type: str = "about:blank",
        instance: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.instance = instance
        self.extra = dict(extra or {})


class JobFailedError(ServiceError):
    """A job that was waited for ended ``failed`` or ``cancelled`` (``job`` is its last state)."""

    def __init__(self, job: Job) -> None:
        reason = f": {job.error}" if job.error else ""
        super().__init__(f"job {job.id} {job.state}{reason}")
        self.job = job


class WaitTimeoutError(ServiceError):
    """A job was still queued or running when the wait's timeout ran out."""

    def __init__(self, job: Job, timeout: float) -> None:
        p = job.progress
        super().__init__(
            f"job {job.id} is still {job.state} after {timeout:g} s "
            f"({p.done}/{p.total}, {p.phase or 'no phase yet'})"
        )
        self.job = job
        self.timeout = timeout
