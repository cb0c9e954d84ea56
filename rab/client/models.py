"""The API's response documents as frozen pydantic models: one definition for both sides.

The service (``app``) declares these as its response models, and the client parses the JSON it
receives into them; the client never imports the service, it talks HTTP only. Unknown fields
are ignored, so a newer service does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TestSubset = Literal["clean", "backdoor"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Dataset(_Out):
    """A stored, validated dataset (``GET /v1/datasets/{id}``)."""

    id: str
    name: str
    source: str
    sha256: str = Field(description="SHA-256 of the content (arrays, shape, classes).")
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    num_classes: int
    train_size: int
    test_size: int
    train_class_counts: tuple[int, ...]
    test_class_counts: tuple[int, ...]
    feature_range: tuple[float, float] | None
    provenance: dict[str, Any] = Field(
        description="Source (file hash or built-in name), preprocessing, original labels, split."
    )
    created_at: datetime


class Progress(_Out):
    """Work done out of ``total`` in the current ``phase``."""

    done: int
    total: int
    phase: str


class Job(_Out):
    """An evaluation or certify job (``GET /v1/jobs/{id}``)."""

    id: str
    kind: str
    state: JobState
    method: str
    dataset_id: str | None
    model_id: str | None
    params: dict[str, Any]
    attack: dict[str, Any] | None
    seed: int
    progress: Progress
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]

    @property
    def finished(self) -> bool:
        """Whether the job reached a terminal state (succeeded, failed or cancelled)."""
        return self.state in TERMINAL_STATES


class Certificate(_Out):
    """One certified prediction (eq. 14): ``prediction`` is -1 when abstaining; ``radius`` is
    ``inf`` when the exact K-NN probability is 1 (sent as the string "Infinity")."""

    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="strings")

    index: int
    subset: str
    label: int | None
    prediction: int
    top_class: int
    p_a: float
    p_b: float
    radius: float
    abstain: bool
    correct: bool | None


class SetMetrics(_Out):
    """Metrics of one test set: accuracy, and certified accuracy / certified rate at each
    radius R (keys as the service prints them, e.g. ``"0.5"``)."""

    num_points: int
    accuracy: float
    abstain_rate: float
    certified_accuracy: dict[str, float]
    certified_rate: dict[str, float]
    attack_success_rate: float | None = None


class Summary(BaseModel):
    """``GET /v1/jobs/{id}/summary``: metrics per test set (``clean``, and ``backdoor`` under an
    attack) and the top-level figures of the paper's tables; other fields (``poisoning``,
    ``expected`` point-estimate metrics, ``votes_sha256``) are kept as sent."""

    model_config = ConfigDict(frozen=True, extra="allow")

    clean: SetMetrics | None = None
    backdoor: SetMetrics | None = None
    clean_accuracy: float | None = None
    backdoor_accuracy: float | None = None
    attack_success_rate: float | None = None

    @property
    def sets(self) -> dict[TestSubset, SetMetrics]:
        """The test sets present, clean first."""
        present: dict[TestSubset, SetMetrics] = {}
        if self.clean is not None:
            present["clean"] = self.clean
        if self.backdoor is not None:
            present["backdoor"] = self.backdoor
        return present


class Member(_Out):
    """One trained ensemble member: the hash of its weights, its noise seed, and how it was
    trained (trainer, device, the members of its stacked batch, seeds, torch version)."""

    index: int
    state_sha256: str
    noise_seed: int
    training: dict[str, Any] | None = None


class ModelInfo(_Out):
    """Provenance of a certified model (``GET /v1/models/{id}``)."""

    id: str
    job_id: str
    method: str
    dataset_id: str
    dataset_sha256: str = Field(description="Content hash of the clean dataset.")
    train_sha256: str = Field(description="Content hash of the (poisoned) training set used.")
    params: dict[str, Any]
    attack: dict[str, Any] | None
    seed: int
    code_version: str
    members: tuple[Member, ...]
    created_at: datetime


class CertifyResult(_Out):
    """Certified predictions for new inputs (``index`` is the position in the request)."""

    job_id: str
    certificates: tuple[Certificate, ...]
