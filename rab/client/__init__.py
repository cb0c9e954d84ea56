"""A Python client of the certification service (HTTP only; see ``rab.client.api.Client``)."""

from contract.api import (
    Certificate,
    CertifyResult,
    Dataset,
    Job,
    Member,
    ModelInfo,
    ModelSummary,
    Progress,
    SetMetrics,
    Summary,
)
from rab.client.api import Client
from rab.client.errors import (
    JobFailedError,
    ProblemError,
    ServiceError,
    UnreachableError,
    WaitTimeoutError,
)

__all__ = [
    "Certificate",
    "CertifyResult",
    "Client",
    "Dataset",
    "Job",
    "JobFailedError",
    "Member",
    "ModelInfo",
    "ModelSummary",
    "ProblemError",
    "Progress",
    "ServiceError",
    "SetMetrics",
    "Summary",
    "UnreachableError",
    "WaitTimeoutError",
]
