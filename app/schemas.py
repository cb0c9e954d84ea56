"""Request bodies of the /v1 API (pydantic models, with OpenAPI examples), its list page, and
the response documents it shares with the client (``rab.client.models``)."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from app.orm import ID_PATTERN, NAME_LENGTH
from rab.data.preprocess import RAW, Preprocessing, affine, pixels

MAX_SEED = 2**63 - 1
T = TypeVar("T")
MAX_INPUTS = 10_000  # inputs per certify request


def _storable(text: str) -> str:
    """Text a database column can hold: PostgreSQL refuses NUL characters."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


#: a name stored in a NAME_LENGTH column
Name = Annotated[str, Field(max_length=NAME_LENGTH), AfterValidator(_storable)]
NAME = TypeAdapter(Name)


class PreprocessingSpec(BaseModel):
    """A fixed feature map (never fitted on the training set being certified)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["auto", "raw", "pixels", "affine"] = Field(
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
    """A named built-in dataset (``rab.evaluation`` names; files from RAB_BUILTIN_DATA_DIR).

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
    builtin: Literal["digits", "breast_cancer", "spambase", "mnist", "mnist01", "cifar", "cifar10"]
    classes: list[int | str] | None = Field(
        default=None, min_length=2, description="Labels or names to keep, relabelled in order."
    )
    variant: Literal["uci", "authors", "drop_total"] = Field(
        default="uci", description="Spambase feature variant."
    )
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


class AttackSpec(BaseModel):
    """A backdoor attack for an evaluation: poison the training set, backdoor the test set."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"pattern": "one_pixel", "norm": 0.1, "poison_fraction": 0.02, "target": 0},
                {"pattern": "four_pixel", "norm": 1.0, "poison_fraction": 0.1, "target": 0,
                 "positions": [[0, 0], [0, 7], [7, 0], [7, 7]]},
            ]
        },
    )
    pattern: Literal["one_pixel", "four_pixel", "blending"]
    norm: float = Field(gt=0, le=1e6, description="L2 norm of the trigger, ||delta||.")
    poison_fraction: float = Field(gt=0, lt=1, description="r_p: share of the training set.")
    target: int = Field(ge=0, description="Class the poisoned samples are relabelled to.")
    positions: list[list[int]] | None = Field(
        default=None, min_length=1, max_length=4,
        description="one_pixel / four_pixel only: where the trigger goes, exactly 1 / 4 "
        "positions, each one input's spatial index: [feature] for vectors, [row, col] for "
        "images (C, H, W) (every channel). Default: the paper's positions, defined only for "
        "inputs of shape (1, 28, 28), (3, 32, 32), (3, 224, 224), (57,) and (56,).",
        examples=[[[0, 0], [0, 7], [7, 0], [7, 7]], [[3]]],
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
    num_test: int | None = Field(default=None, ge=1, description="Certify only the first num_test.")


class EnsembleParams(BaseModel):
    """DNN-RAB (section 6.1): N models, each trained on its own Gaussian-noised training set."""

    model_config = ConfigDict(extra="forbid")
    sigma: float = Field(gt=0, le=1e6, description="Training/test noise standard deviation.")
    num_models: int = Field(ge=1, le=10_000, description="N.")
    arch: Literal["mnist_cnn", "preact_resnet", "mlp", "resnet18"] | None = Field(
        default=None, description="Default: mnist_cnn for 1x28x28, preact_resnet for 3x32x32, "
        "mlp for vectors."
    )
    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=1, le=65_536)
    lr: float = Field(default=1e-3, gt=0, le=10)
    bound: Literal["clopper-pearson", "hoeffding"] = Field(
        default="clopper-pearson",
        description="clopper-pearson on hard votes, hoeffding on soft votes (mean probabilities).",
    )
    alpha: float = Field(default=0.001, gt=0, lt=1, description="1 - confidence level.")
    dp_noise_multiplier: float | None = Field(default=None, gt=0, le=1e3, description="DP-SGD.")
    dp_max_grad_norm: float | None = Field(default=None, gt=0, le=1e6, description="DP clip C.")
    models_per_task: int = Field(default=4, ge=1, le=1000, description="Fan-out chunk size.")
    num_test: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _dp_both_or_neither(self) -> EnsembleParams:
        if (self.dp_noise_multiplier is None) != (self.dp_max_grad_norm is None):
            raise ValueError("DP-SGD needs both dp_noise_multiplier and dp_max_grad_norm")
        return self


class _JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str = Field(pattern=ID_PATTERN)
    attack: AttackSpec | None = None
    seed: int = Field(default=0, ge=0, le=MAX_SEED)


def _job_example(method: str, params: dict[str, Any], **extra: Any) -> ConfigDict:
    """The model config of a job request, with one example body."""
    dataset_id = "3f2a9c0d5e6b4a718293a4b5c6d7e8f9"
    body = {"dataset_id": dataset_id, "method": method, "params": params, **extra, "seed": 0}
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
        "ensemble", {"sigma": 1.0, "num_models": 100, "epochs": 10, "alpha": 0.001},
        attack={"pattern": "four_pixel", "norm": 0.1, "poison_fraction": 0.02, "target": 0},
    )


JobIn = Annotated[KnnJobIn | EnsembleJobIn, Field(discriminator="method")]


class CertifyIn(BaseModel):
    """New inputs to certify, shape (m, *input_shape) or flattened (m, prod(input_shape))."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"inputs": [[0.0, 0.5, 1.0]]}]}
    )
    inputs: list[Any] = Field(min_length=1, max_length=MAX_INPUTS)
