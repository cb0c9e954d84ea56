"""The /v1 API's documents: request bodies and responses, one definition for every side.

The service (``app``) validates requests and declares responses with these models; the typed
client (``rab.client``) sends the requests and parses the responses with the same ones, talking
HTTP only. Allowed values are the library's own (``Literal`` types of ``rab``), so the API cannot
drift from what the library accepts. Responses ignore unknown fields, so a newer service does
not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    model_validator,
)

from rab.architectures import Architecture
from rab.data.preprocess import RAW, Preprocessing, affine, pixels
from rab.ensemble.certify import Bound
from rab.ensemble.config import TRAINING_PRESETS
from rab.evaluation.attack import AttackKind, PoisonMode
from rab.evaluation.datasets import BuiltinName, SpambaseVariant
from rab.knn.levels import EdgeRule
from rab.partition.hashing import MAX_CLASSIFIERS, Aggregation
from rab.seeds import MAX_SEED

T = TypeVar("T")
MAX_INPUTS = 10_000  # inputs per certify request
NAME_LENGTH = 200  # the name columns of keys and datasets (and Idempotency-Key), in characters
MAX_INT = 2**31 - 1  # Integer columns (PostgreSQL int4), e.g. a certificate's sample index
ID_PATTERN = "^[0-9a-f]{32}$"  # the ids the service makes (uuid4 hex)
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATES: tuple[str, ...] = get_args(JobState)
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
TestSubset = Literal["clean", "backdoor"]
Subset = Literal["clean", "backdoor", "inputs"]
#: The subset of a certify job's certificates: the new inputs it was given.
INPUTS: Subset = "inputs"
PreprocessingKind = Literal["auto", "raw", "pixels", "affine"]
Method = Literal["knn", "ensemble", "partition"]
JobKind = Literal["evaluate", "certify"]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
OptionValue = StrictBool | StrictInt | StrictFloat | list[StrictInt]


def _storable(text: str) -> str:
    """Text a database column can hold: PostgreSQL refuses NUL characters."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


#: a name stored in a NAME_LENGTH column
Name = Annotated[str, Field(max_length=NAME_LENGTH), AfterValidator(_storable)]
NAME = TypeAdapter(Name)


# ---- requests ----------------------------------------------------------------------------

class PreprocessingSpec(BaseModel):
    """A fixed feature map (never fitted on the training set being certified)."""

    model_config = ConfigDict(extra="forbid")
    kind: PreprocessingKind = Field(
        default="auto", description="auto: pixels/255 for uint8 features, raw otherwise."
    )
    max_value: float = Field(default=255.0, gt=0, description="pixels: x / max_value.")
    offset: list[float] | float | None = Field(
        default=None, description="affine: (x - offset) / scale."
    )
    scale: list[float] | float | None = None

    @model_validator(mode="after")
    def _valid_in_the_library(self) -> PreprocessingSpec:
        self.build()  # rab.data's rules (positive finite scale / max_value, finite offset)
        return self

    def build(self) -> Preprocessing | None:
        """The ``rab.data`` preprocessing (None for auto: the loader picks); ``ValueError``
        where ``rab.data`` refuses the numbers."""
        if self.kind == "auto":
            return None
        if self.kind == "raw":
            return RAW
        if self.kind == "pixels":
            return pixels(self.max_value)
        if self.offset is None or self.scale is None:
            raise ValueError("affine preprocessing needs offset and scale")
        return affine(np.asarray(self.offset), np.asarray(self.scale))


class DatasetOptions(BaseModel):
    """Options of a dataset upload (form field ``options``, JSON) or built-in request."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    classes: list[int] | None = Field(
        default=None,
        min_length=2,
        description="Original labels to keep, relabelled 0..C-1 in order.",
    )
    preprocessing: PreprocessingSpec = Field(default_factory=lambda: PreprocessingSpec())
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="Files without a test split.")
    split_seed: int = Field(default=0, ge=0, le=2**32 - 1)
    label_column: int = Field(default=-1, description="CSV: index of the label column.")
    header: bool | None = Field(default=None, description="CSV: header row (None: detect).")


class BuiltinDatasetIn(BaseModel):
    """A named built-in dataset (``rab.evaluation`` names; files from RAB_SHARED_DATA).

    digits / breast_cancer: scikit-learn's (offline); spambase: UCI spambase.data; mnist01:
    MNIST 0 vs 1 (mnist_01.npz); cifar: CIFAR-10 bird vs airplane (cifar10_airplane_bird.npz);
    mnist / cifar10: all of MNIST / CIFAR-10 in torchvision's layout (MNIST/raw/...,
    cifar-10-batches-py/...), downloaded first with ``download: true`` where the server allows it
    (RAB_ALLOW_DOWNLOADS).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"builtin": "mnist01", "train_size": 2000},
                {"builtin": "mnist", "classes": [3, 8], "train_size": 2000, "test_size": 500},
                {"builtin": "cifar10", "classes": ["bird", "airplane"], "download": True},
            ]
        },
    )
    builtin: BuiltinName
    classes: list[int | str] | None = Field(
        default=None, min_length=2, description="Labels or names to keep, relabelled in order."
    )
    variant: SpambaseVariant = Field(default="uci", description="Spambase feature variant.")
    split_seed: int = Field(default=0, ge=0, le=2**32 - 1)
    train_size: int | None = Field(default=None, ge=1, description="Seeded training subset.")
    test_size: int | None = Field(default=None, ge=1, description="Seeded test subset.")
    subset_seed: int = Field(default=0, ge=0, le=2**32 - 1)
    download: bool = Field(
        default=False,
        description="mnist / cifar10 only: download the files into the server's built-in data "
        "directory if missing (403 unless the server sets RAB_ALLOW_DOWNLOADS).",
    )


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``after`` for the next page."""

    items: list[T]
    next_cursor: str | None


class AttackIn(BaseModel):
    """A backdoor attack for an evaluation (``rab.evaluation.AttackSpec``, same names):
    poison the training set, backdoor the test set."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"kind": "one_pixel", "norm": 0.1, "rate": 0.02, "target": 0},
                {"kind": "four_pixel", "norm": 1.0, "rate": 0.1, "target": 0, "seed": 7,
                 "positions": [[0, 0], [0, 7], [7, 0], [7, 7]]},
            ]
        },
    )
    kind: AttackKind
    norm: float | None = Field(
        default=None, gt=0, le=1e6,
        description="L2 norm of the trigger, ||delta|| (required except for badnets_patch).",
    )
    rate: float = Field(gt=0, le=1, description="r_p: share of the training set poisoned.")
    target: int = Field(ge=0, description="Class the poisoned samples are relabelled to.")
    seed: Seed | None = Field(
        default=None, description="Draws the poisoned rows; default: a fresh seed, recorded."
    )
    mode: PoisonMode = Field(default="replace", description="Replace clean points or append.")
    clip: bool = Field(default=True, description="Clip triggered inputs to the feature range.")
    positions: list[list[int]] | None = Field(
        default=None, min_length=1, max_length=4,
        description="one_pixel / four_pixel only: where the trigger goes, exactly 1 / 4 "
        "positions, each one input's spatial index: [feature] for vectors, [row, col] for "
        "images (C, H, W) (every channel). Default: the paper's positions, defined only for "
        "inputs of shape (1, 28, 28), (3, 32, 32), (3, 224, 224), (57,) and (56,).",
        examples=[[[0, 0], [0, 7], [7, 0], [7, 7]], [[3]]],
    )
    options: dict[str, OptionValue] = Field(
        default_factory=dict, max_length=8,
        description="Extra trigger options (badnets_patch: size, position, value).",
    )


class KnnParams(BaseModel):
    """Exact smoothed K-NN (Theorem 3): noise on training features only."""

    model_config = ConfigDict(extra="forbid")
    sigma: float = Field(gt=0, le=1e6, description="Noise standard deviation.")
    k: int = Field(default=5, ge=1, le=100, description="Neighbours K.")
    num_levels: int = Field(default=200, ge=2, le=10_000, description="Distance levels L.")
    spread: float = Field(
        default=1.0, gt=0, le=1e6, description="Edge spread s (1.0 images, 0.1 spam)."
    )
    edge_rule: EdgeRule = Field(
        default="quantiles",
        description="Level edges: quantiles (default: from a noisy copy of the input to a point "
        "at squared distance d * spread) or authors (their rule, to reproduce their tables).",
    )
    num_test: int | None = Field(default=None, ge=1, description="Certify only the first num_test.")


class EnsembleParams(BaseModel):
    """DNN-RAB (section 6.1): N models, each trained on its own Gaussian-noised training set.

    Unset ``arch`` / ``epochs`` / ``batch_size`` / ``lr`` take the authors' preset for the
    input shape (``rab.evaluation.EnsembleMethod``)."""

    model_config = ConfigDict(extra="forbid")
    sigma: float = Field(gt=0, le=1e6, description="Training/test noise standard deviation.")
    num_models: int = Field(ge=1, le=10_000, description="N.")
    arch: Architecture | None = Field(
        default=None, description="Default: mnist_cnn for 1x28x28, preact_resnet for 3x32x32, "
        "resnet18 for larger RGB images, mlp otherwise."
    )
    epochs: int | None = Field(default=None, ge=1, le=1000)
    batch_size: int | None = Field(default=None, ge=1, le=65_536)
    lr: float | None = Field(default=None, gt=0, le=10)
    bound: Bound = Field(
        default="clopper-pearson",
        description="clopper-pearson on hard votes, hoeffding on soft votes (mean probabilities).",
    )
    alpha: float = Field(default=0.001, gt=0, lt=1, description="1 - confidence level.")
    dp_noise_multiplier: float | None = Field(default=None, gt=0, le=1e3, description="DP-SGD.")
    dp_max_grad_norm: float | None = Field(default=None, gt=0, le=1e6, description="DP clip C.")
    seed: Seed | None = Field(
        default=None, description="Members' initialisation and training noise; default: a "
        "fresh seed, recorded."
    )
    models_per_task: int = Field(default=4, ge=1, le=1000, description="Fan-out chunk size.")
    num_test: int | None = Field(default=None, ge=1)


class PartitionParams(BaseModel):
    """Partition aggregation (``rab.partition``): ``k`` partitions of the training set fixed by a
    hash of each point's content, one base model per partition trained without noise, a
    plurality vote; certified poison COUNT (points inserted, deleted or changed), no L2 radius.

    ``aggregation``: dpa (Deep Partition Aggregation) or fa (Finite Aggregation, ``d`` buckets
    per classifier, k d base models). Unset ``arch`` / ``epochs`` / ``batch_size`` / ``lr`` take
    ``preset`` (auto: the authors' preset for the input shape)."""

    model_config = ConfigDict(extra="forbid")
    k: int = Field(default=50, ge=1, le=MAX_CLASSIFIERS, description="Partitions k.")
    aggregation: Aggregation = Field(default="dpa", description="dpa or fa.")
    d: int = Field(default=1, ge=1, le=MAX_CLASSIFIERS,
                   description="fa only: buckets per classifier (dpa: 1).")
    preset: str = Field(
        default="auto", description="Training preset (auto: from the input shape).",
        json_schema_extra={"enum": ["auto", *TRAINING_PRESETS]},
    )
    arch: Architecture | None = None
    epochs: int | None = Field(default=None, ge=1, le=1000)
    batch_size: int | None = Field(default=None, ge=1, le=65_536)
    lr: float | None = Field(default=None, gt=0, le=10)
    seed: Seed | None = Field(
        default=None, description="Base models' initialisation and batch order; default: a "
        "fresh seed, recorded."
    )
    models_per_task: int = Field(default=25, ge=1, le=10_000,
                                 description="Fan-out chunk size (base models per task).")
    num_test: int | None = Field(default=None, ge=1)


class _JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str = Field(pattern=ID_PATTERN)
    attack: AttackIn | None = None


def _job_example(method: str, params: dict[str, Any], **extra: Any) -> ConfigDict:
    """The model config of a job request, with one example body."""
    body = {"dataset_id": "3f2a9c0d5e6b4a718293a4b5c6d7e8f9", "method": method,
            "params": params, **extra}
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [body]})


class KnnJobIn(_JobBase):
    """A K-NN evaluation job."""

    method: Literal["knn"]
    params: KnnParams

    model_config = _job_example("knn", {"sigma": 1.0, "k": 5, "spread": 0.1, "num_test": 50})


class EnsembleJobIn(_JobBase):
    """An ensemble (DNN-RAB) evaluation job."""

    method: Literal["ensemble"]
    params: EnsembleParams

    model_config = _job_example(
        "ensemble", {"sigma": 1.0, "num_models": 100, "epochs": 10, "alpha": 0.001, "seed": 0},
        attack={"kind": "four_pixel", "norm": 0.1, "rate": 0.02, "target": 0, "seed": 0},
    )


class PartitionJobIn(_JobBase):
    """A partition-aggregation (DPA / Finite Aggregation) evaluation job: certified poison
    counts."""

    method: Literal["partition"]
    params: PartitionParams

    model_config = _job_example(
        "partition", {"k": 50, "aggregation": "dpa", "epochs": 10, "seed": 0, "num_test": 100}
    )


AnyJobIn = KnnJobIn | EnsembleJobIn | PartitionJobIn
JobIn = Annotated[AnyJobIn, Field(discriminator="method")]
_JOB_ADAPTER: TypeAdapter[AnyJobIn] = TypeAdapter(JobIn)


def job_request(
    dataset_id: str, method: str, params: dict[str, Any], attack: dict[str, Any] | None = None
) -> AnyJobIn:
    """A typed job request (``pydantic.ValidationError`` naming a bad field)."""
    body: dict[str, Any] = {"dataset_id": dataset_id, "method": method, "params": params}
    if attack is not None:
        body["attack"] = attack
    return _JOB_ADAPTER.validate_python(body)


class CertifyIn(BaseModel):
    """New inputs to certify, shape (m, *input_shape) or flattened (m, prod(input_shape))."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"inputs": [[0.0, 0.5, 1.0]]}]}
    )
    inputs: list[Any] = Field(min_length=1, max_length=MAX_INPUTS)


# ---- responses ---------------------------------------------------------------------------

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


class Seeds(_Out):
    """The seeds a job ran with (given in the request, or drawn fresh and recorded):
    ``poisoning`` drew the poisoned rows, ``training`` every ensemble member's initialisation
    and noise d_k (eq. 20); None where the job has no such draw."""

    poisoning: int | None = None
    training: int | None = None

    @classmethod
    def of(cls, params: dict[str, Any], attack: dict[str, Any] | None) -> Seeds:
        """The seeds recorded in a job's stored ``params`` and ``attack``."""
        return cls(poisoning=None if attack is None else attack.get("seed"),
                   training=params.get("seed"))


class Job(_Out):
    """An evaluation or certify job (``GET /v1/jobs/{id}``)."""

    id: str
    kind: str
    state: JobState
    method: str
    dataset_id: str | None
    model_id: str | None
    params: dict[str, Any] = Field(
        description="The method's parameters as the library records them, every seed filled in."
    )
    attack: dict[str, Any] | None
    seeds: Seeds
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
    ``inf`` when the exact K-NN probability is 1 (sent as the string "Infinity").

    Where the job has a poison-count certificate: ``poison_count`` training points inserted or
    deleted (a changed point counts 2) provably leave ``count_prediction`` unchanged, and so do
    ``poison_modifications`` changed points (-1: abstained, no guarantee). For a partition job
    ``count_prediction`` is ``prediction`` (radius 0: no L2 certificate); for a K-NN job it is
    the PLAIN K-NN's prediction, which may differ from the smoothed K-NN's ``prediction``
    (the summary's ``poison_count.classifier`` names it). None for ensembles."""

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
    poison_count: int | None = None
    poison_modifications: int | None = None
    count_prediction: int | None = None


class CountMetrics(_Out):
    """Certified accuracy against the poison count r (keys as printed, e.g. ``"10"``):
    mean(count_prediction correct and poison_count >= r), for the classifier named."""

    classifier: str = Field(description="The classifier the count is proved for, e.g. "
                            "'plain K-NN (K=5)' beside a smoothed K-NN.")
    method: str = Field(description="dpa, fa or knn.")
    accuracy: float = Field(description="Accuracy of that classifier's own prediction.")
    median_count: float
    certified_accuracy: dict[str, float]
    certified_rate: dict[str, float]


class SetMetrics(_Out):
    """Metrics of one test set: accuracy, and certified accuracy / certified rate at each
    radius R (keys as the service prints them, e.g. ``"0.5"``)."""

    num_points: int
    accuracy: float
    abstain_rate: float
    certified_accuracy: dict[str, float]
    certified_rate: dict[str, float]
    attack_success_rate: float | None = None
    certified_accuracy_at_attack_norm: float | None = Field(
        default=None, description="Under an attack: certified accuracy at the poisoning's own "
        "total norm sqrt(sum_i ||delta_i||^2) (eq. 14)."
    )
    poison_count: CountMetrics | None = Field(
        default=None, description="Partition and K-NN jobs: certified accuracy against the "
        "number of poisoned training points."
    )


class Summary(BaseModel):
    """``GET /v1/jobs/{id}/summary``: metrics per test set (``clean``, and ``backdoor`` under an
    attack) and the top-level figures of the paper's tables; other fields (``poisoning``,
    ``votes_sha256``) are kept as sent."""

    model_config = ConfigDict(frozen=True, extra="allow")

    clean: SetMetrics | None = None
    backdoor: SetMetrics | None = None
    clean_accuracy: float | None = None
    backdoor_accuracy: float | None = None
    attack_success_rate: float | None = None
    attack_total_norm: float | None = Field(
        default=None, description="Total L2 norm of the poisoned training points' patterns."
    )
    expected_not_certified: dict[str, SetMetrics] | None = Field(
        default=None, description="Ensembles: the metrics of the point-estimate radii from "
        "the vote shares; NOT certificates."
    )

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


class ModelSummary(_Out):
    """A certified model as listed (``GET /v1/models``): its provenance without the members."""

    id: str
    job_id: str
    method: str
    dataset_id: str
    dataset_sha256: str = Field(description="Content hash of the clean dataset.")
    train_sha256: str = Field(description="Content hash of the (poisoned) training set used.")
    params: dict[str, Any]
    attack: dict[str, Any] | None
    seeds: Seeds
    code_version: str
    created_at: datetime


class ModelInfo(ModelSummary):
    """Provenance of a certified model (``GET /v1/models/{id}``), with every member."""

    members: tuple[Member, ...]


class CertifyResult(_Out):
    """Certified predictions for new inputs (``index`` is the position in the request)."""

    job_id: str
    certificates: tuple[Certificate, ...]


class QueueStatus(_Out):
    """One queue (``GET /v1/queues``): live workers consuming it, units of work waiting and
    running on it, how long the oldest has waited, and leases that expired (work the reaper is
    about to re-queue). Work waiting on a queue with no consumer waits for a worker to start."""

    queue: str
    consumers: int
    pending: int
    running: int
    oldest_pending_s: float | None
    expired_leases: int

