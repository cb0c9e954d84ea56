"""Certification methods of an evaluation and how each certifies a list of test sets.

- :class:`KnnMethod`: the exact Gaussian-smoothed K-NN (Theorem 3; ``rab.knn.certify_knn``):
  pA, pB exact up to a reported slack, radius by eq. 14, no confidence level.
- :class:`EnsembleMethod`: DNN-RAB (section 6.1, Algorithm 1; ``rab.ensemble``): N models
  trained on noised copies of the training set, votes on x + u_k, Clopper-Pearson (hard votes)
  or Hoeffding (soft votes) bounds at level 1 - alpha, radius by eq. 14.  The point-estimate
  ("expected") certificates are computed beside them, labelled as NOT certified.
- :class:`PartitionMethod`: partition aggregation (DPA or Finite Aggregation; ``rab.partition``):
  one base model per content-hash partition, plurality vote, certified poison COUNT (no radius).

The K-NN's certificates also carry the plain (unsmoothed) K-NN's poison count, with that
classifier's own prediction (``Certified.poison_count``, ``rab.partition.knn``).
"""

from __future__ import annotations

import math
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rab.architectures import ARCHITECTURES, Architecture
from rab.bounds import CertificateBatch
from rab.data import DataFacts, Dataset
from rab.ensemble.certify import BOUNDS, VOTES_OF_BOUND, Bound, VoteKind
from rab.ensemble.config import TRAINING_PRESETS
from rab.evaluation.summary import chunks, concat, take
from rab.evaluation.testsets import TestSet, all_inputs, row_slices
from rab.extras import require
from rab.knn.inputs import KnnTraining, knn_training
from rab.knn.levels import EDGE_RULES, EdgeRule
from rab.partition.certificate import PoisonCountBatch, concat_counts
from rab.seeds import fresh_seed, resolve_seed

__all__ = [
    "METHODS",
    "Certified",
    "EnsembleMethod",
    "KnnMethod",
    "Method",
    "PartitionMethod",
    "Progress",
    "certify_members",
    "certify_partition_votes",
    "certify_stacked",
    "certify_test_sets",
    "ensemble_preset_name",
    "method_from_dict",
]

#: ``progress(stage, done, total)``: called as work advances (stage is a short description).
Progress = Callable[[str, int, int], None]
METHODS: tuple[str, ...] = ("knn", "ensemble", "partition")
#: Methods without smoothing noise (no ``sigma`` field; their ``sigma`` property is 0).
UNSMOOTHED_METHODS: tuple[str, ...] = ("partition",)
_KNN_CHUNK = 64


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return float(value)


def _count(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_training(method: Any, positive: Sequence[str]) -> None:
    """ValueError unless ``method``'s training options are valid: ``preset``, ``arch``,
    ``epochs`` / ``batch_size`` counts, and the ``positive`` fields (floats, set back as
    floats) when given. Shared by the ensemble and the partition method."""
    if method.preset not in ("auto", *TRAINING_PRESETS):
        raise ValueError(
            f"preset must be auto or one of {sorted(TRAINING_PRESETS)}, got {method.preset!r}"
        )
    if method.arch is not None and method.arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {list(ARCHITECTURES)}, got {method.arch!r}")
    for name in ("epochs", "batch_size"):
        if getattr(method, name) is not None:
            _count(getattr(method, name), name)
    for name in positive:
        if getattr(method, name) is not None:
            object.__setattr__(method, name, _positive(getattr(method, name), name))


@dataclass(frozen=True)
class KnnMethod:
    """Exact smoothed K-NN: K neighbours, noise sigma, L levels, the authors' edge ``spread``
    (1.0 for images, 0.1 for Spambase) and ``edge_rule`` ("authors" to reproduce their
    edges exactly; ``rab.knn.default_edges``)."""

    sigma: float
    k: int = 5
    num_levels: int = 200
    spread: float = 1.0
    backend: str = "numpy"
    edge_rule: EdgeRule = "quantiles"
    name: Literal["knn"] = "knn"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", _positive(self.sigma, "sigma"))
        object.__setattr__(self, "spread", _positive(self.spread, "spread"))
        _count(self.k, "k")
        _count(self.num_levels, "num_levels", 2)
        if self.backend not in ("numpy", "torch", "auto"):
            raise ValueError(f"backend must be numpy, torch or auto, got {self.backend!r}")
        if self.edge_rule not in EDGE_RULES:
            raise ValueError(f"edge_rule must be one of {EDGE_RULES}, got {self.edge_rule!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields; ``edge_rule`` only when not the default, so that the settings (and
        result keys) of existing K-NN cells stay as they were."""
        out = asdict(self)
        if self.edge_rule == "quantiles":
            del out["edge_rule"]
        return out

    def check(self, facts: DataFacts) -> None:
        """ValueError unless the K-NN can run on data of ``facts``: K training points, and
        finite level edges (``rab.knn.default_edges``, which refuses a sigma far below the
        data's scale at once) for this sigma."""
        if self.k > facts.train_size:
            raise ValueError(
                f"k={self.k} neighbours but the training set has {facts.train_size} points"
            )
        from rab.knn.levels import check_edges, default_edges

        dim = math.prod(facts.input_shape)
        try:
            check_edges(default_edges(dim, self.sigma, self.num_levels, self.spread,
                                      rule=self.edge_rule))
        except ArithmeticError:
            raise ValueError(
                f"sigma={self.sigma:g} is too small for {dim} features: the distance levels "
                "of the smoothed K-NN are not finite numbers"
            ) from None


@dataclass(frozen=True)
class EnsembleMethod:
    """DNN-RAB: ``num_models`` models trained with noise sigma, bounds at level 1 - alpha.

    ``preset`` picks the authors' optimiser settings and architecture ("auto": MNIST CNN for
    (1, 28, 28), pre-activation ResNet for (3, 32, 32), ResNet-18 for larger RGB images, MLP
    otherwise); ``arch`` / ``epochs`` / ``batch_size`` / ``lr`` override it.  ``bound``:
    "clopper-pearson" (hard votes, eq. 19) or "hoeffding" (soft votes).  DP-SGD (section 6.2)
    when both ``dp_noise_multiplier`` and ``dp_max_grad_norm`` are given (GroupNorm then
    replaces BatchNorm).  ``seed`` seeds every member's initialisation and training noise d_k
    (eq. 20); None draws a fresh one, recorded here.
    """

    sigma: float
    num_models: int = 20
    alpha: float = 0.001
    bound: Bound = "clopper-pearson"
    preset: str = "auto"
    arch: Architecture | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    dp_noise_multiplier: float | None = None
    dp_max_grad_norm: float | None = None
    seed: int = field(default_factory=fresh_seed)
    name: Literal["ensemble"] = "ensemble"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", _positive(self.sigma, "sigma"))
        _count(self.num_models, "num_models")
        if not (isinstance(self.alpha, float | int) and 0.0 < self.alpha < 1.0):
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha!r}")
        if self.bound not in BOUNDS:
            raise ValueError(f"bound must be one of {list(BOUNDS)}, got {self.bound!r}")
        _check_training(self, ("lr", "dp_noise_multiplier", "dp_max_grad_norm"))
        if (self.dp_noise_multiplier is None) != (self.dp_max_grad_norm is None):
            raise ValueError("DP-SGD needs both dp_noise_multiplier and dp_max_grad_norm")
        object.__setattr__(self, "seed", resolve_seed(self.seed, "seed"))

    @property
    def votes(self) -> VoteKind:
        """The vote kind the bound is computed on (hard for Clopper-Pearson, soft for
        Hoeffding)."""
        return VOTES_OF_BOUND[self.bound]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def config(self, input_shape: tuple[int, ...], num_classes: int, *, vanilla: bool = False
               ) -> Any:
        """The ``rab.ensemble.EnsembleConfig`` (ValueError when the architecture cannot take
        ``input_shape``); ``vanilla``: one model trained without noise."""
        from rab.ensemble.config import DPConfig, preset

        overrides: dict[str, Any] = {
            key: getattr(self, key)
            for key in ("arch", "epochs", "batch_size", "lr")
            if getattr(self, key) is not None
        }
        if self.dp_noise_multiplier is not None and self.dp_max_grad_norm is not None:
            overrides["dp"] = DPConfig(
                noise_multiplier=self.dp_noise_multiplier, max_grad_norm=self.dp_max_grad_norm
            )
            overrides["norm"] = "group"
        name = ensemble_preset_name(input_shape) if self.preset == "auto" else self.preset
        return preset(
            name, input_shape=input_shape, num_classes=num_classes,
            sigma=0.0 if vanilla else self.sigma, num_models=1 if vanilla else self.num_models,
            seed=self.seed, **overrides,
        )

    def check(self, facts: DataFacts) -> None:
        """ValueError unless this ensemble can be trained on data of ``facts``."""
        self.config(facts.input_shape, facts.num_classes)


@dataclass(frozen=True)
class PartitionMethod:
    """Partition aggregation: ``k`` content-hash partitions, one base model each, plurality vote
    (ties to the smaller class), certified poison count (``rab.partition.certificate``).

    ``aggregation``: "dpa" (Levine & Feizi 2021) or "fa" (Finite Aggregation, Wang et al. 2022,
    ``d`` buckets per classifier, k d classifiers).  ``preset`` / ``arch`` / ``epochs`` /
    ``batch_size`` / ``lr`` as for :class:`EnsembleMethod`; the base models train without noise.
    ``seed`` seeds every base model's initialisation and batch order; None draws a fresh one,
    recorded here.  No L2 radius: its ``CertificateBatch`` has radius 0 (method
    "partition-vote"), its guarantee is ``Certified.poison_count``.
    """

    k: int = 50
    aggregation: Literal["dpa", "fa"] = "dpa"
    d: int = 1
    preset: str = "auto"
    arch: Architecture | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = field(default_factory=fresh_seed)
    name: Literal["partition"] = "partition"

    def __post_init__(self) -> None:
        from rab.partition.hashing import PartitionScheme

        PartitionScheme(self.k, self.aggregation, self.d)  # ValueError naming the problem
        _check_training(self, ("lr",))
        object.__setattr__(self, "seed", resolve_seed(self.seed, "seed"))

    @property
    def sigma(self) -> float:
        """0: the base models train without smoothing noise (labels and grids use it)."""
        return 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def config(self, input_shape: tuple[int, ...], num_classes: int, *, vanilla: bool = False
               ) -> Any:
        """The ``rab.partition.PartitionConfig``; ``vanilla``: the base settings as one
        ``EnsembleConfig`` model trained on the whole training set."""
        from rab.ensemble.config import preset
        from rab.partition.config import PartitionConfig
        from rab.partition.hashing import PartitionScheme

        scheme = PartitionScheme(self.k, self.aggregation, self.d)
        overrides = {key: getattr(self, key) for key in ("arch", "epochs", "batch_size", "lr")
                     if getattr(self, key) is not None}
        name = ensemble_preset_name(input_shape) if self.preset == "auto" else self.preset
        base = preset(name, input_shape=input_shape, num_classes=num_classes, sigma=0.0,
                      num_models=1 if vanilla else scheme.num_classifiers, seed=self.seed,
                      **overrides)
        return base if vanilla else PartitionConfig(scheme, base)

    def check(self, facts: DataFacts) -> None:
        """ValueError unless the base models can be trained on data of ``facts``: at most one
        partition per training point (more would leave partitions empty for sure), and an
        architecture that takes the inputs."""
        if self.k > facts.train_size:
            raise ValueError(
                f"k={self.k} partitions but the training set has {facts.train_size} points"
            )
        self.config(facts.input_shape, facts.num_classes)


Method = KnnMethod | EnsembleMethod | PartitionMethod


def ensemble_preset_name(input_shape: Sequence[int]) -> str:
    """The authors' architecture family for an input shape (see :class:`EnsembleMethod`)."""
    shape = tuple(int(s) for s in input_shape)
    if shape == (1, 28, 28):
        return "mnist"
    if shape == (3, 32, 32):
        return "cifar"
    if len(shape) == 3 and shape[0] == 3 and min(shape[1:]) >= 64:
        return "imagenet"
    return "tabular"


def method_from_dict(data: Mapping[str, Any]) -> Method:
    """A method from ``{"name": "knn" | "ensemble" | "partition", ...fields}``; unknown keys
    raise ValueError (``sigma`` is not a partition field)."""
    values = dict(data)
    name = values.pop("name", None)
    classes: dict[str, type[KnnMethod] | type[EnsembleMethod] | type[PartitionMethod]] = {
        "knn": KnnMethod, "ensemble": EnsembleMethod, "partition": PartitionMethod
    }
    if name not in classes:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    cls = classes[name]
    unknown = set(values) - (set(cls.__dataclass_fields__) - {"name"})
    if unknown:
        raise ValueError(f"unknown {name} parameters {sorted(unknown)}; known: "
                         f"{sorted(set(cls.__dataclass_fields__) - {'name'})}")
    if "sigma" not in values and name not in UNSMOOTHED_METHODS:
        raise ValueError(f"the {name} method needs sigma")
    return cls(**values)


@dataclass(frozen=True, eq=False)
class Certified:
    """Certificates of one test set; ``expected`` holds the ensemble's point-estimate radii
    (NOT certified) and ``votes`` its vote matrices, both None for the exact K-NN, whose
    certificates are exact.  ``poison_count``: the poison-count certificate beside the radius
    (partition aggregation: of the same prediction; K-NN: of the PLAIN K-NN, whose prediction
    ``poison_count.prediction`` may differ from the smoothed one), None for ensembles."""

    certificates: CertificateBatch
    expected: CertificateBatch | None = None
    votes: Any = None
    poison_count: PoisonCountBatch | None = None


#: Each dataset's training split prepared for the K-NN, kept as long as the dataset object is
#: (a worker's hot K-NN model keeps its dataset).
_KNN_TRAINING: weakref.WeakKeyDictionary[Dataset, KnnTraining] = weakref.WeakKeyDictionary()
_KNN_TRAINING_LOCK = threading.Lock()


def knn_training_of(train: Dataset) -> KnnTraining:
    """``train``'s training split checked and prepared once for the K-NN (float64 features,
    labels, squared norms: ``rab.knn.knn_training``), however many certifications follow."""
    with _KNN_TRAINING_LOCK:
        training = _KNN_TRAINING.get(train)
        if training is None:
            training = _KNN_TRAINING[train] = knn_training(
                train.X_train, train.y_train, train.num_classes
            )
        return training


def _certify_knn(
    train: Dataset, tests: Sequence[TestSet], method: KnnMethod, progress: Progress | None
) -> dict[str, Certified]:
    from rab.knn import certify_knn
    from rab.partition.knn import plain_knn_certificate

    training = knn_training_of(train)
    # All test sets in one pass (a worker's batch of certify jobs is many one-row sets).
    X = all_inputs(tests)
    stage = "K-NN certifying " + " + ".join(t.subset for t in tests)
    batches, counts = [], []
    for part in chunks(len(X), _KNN_CHUNK):
        if progress is not None:
            progress(stage, part.start, len(X))
        batches.append(
            certify_knn(
                training, None, X[part], sigma=method.sigma, k=method.k,
                num_classes=train.num_classes, num_levels=method.num_levels,
                spread=method.spread, backend=method.backend, edge_rule=method.edge_rule,
            )
        )
        counts.append(plain_knn_certificate(training, None, X[part], k=method.k,
                                            num_classes=train.num_classes))
    if progress is not None:
        progress(stage, len(X), len(X))
    certificates, poison_count = concat(batches), concat_counts(counts)
    return {test.subset: Certified(take(certificates, rows), poison_count=take(poison_count, rows))
            for test, rows in row_slices(tests)}


def certify_members(
    members: Iterable[Any],
    tests: Sequence[TestSet],
    method: EnsembleMethod,
    config: Any,
) -> dict[str, Certified]:
    """Certify every test set with the votes of trained ensemble members (Algorithm 1 lines
    7-18): each member ``rab.ensemble.Member`` votes on x + u_k (eq. 19), the votes are
    bounded at level 1 - alpha (Clopper-Pearson or Hoeffding) and turned into radii by eq. 14;
    the point-estimate radii (NOT certified) come beside them. The votes are kept in
    ``Certified.votes`` for storage. The members are stacked ``rab.ensemble.stacked.MEMBER_CHUNK``
    at a time (an iterator of members is consumed chunk by chunk)."""
    require("torch", "DNN-RAB ensembles")
    from rab.ensemble.stacked import stack_members

    return certify_stacked(stack_members(members), tests, method, config)


def certify_stacked(
    stacks: Iterable[Any],
    tests: Sequence[TestSet],
    method: EnsembleMethod,
    config: Any,
) -> dict[str, Certified]:
    """:func:`certify_members` with the members already stacked
    (``rab.ensemble.stacked.StackedMembers``, e.g. hot in a worker): the same vote function,
    so the same certificates for the same inputs."""
    require("torch", "DNN-RAB ensembles")
    from rab.ensemble.certify import certify_votes, expected_certificates
    from rab.ensemble.stacked import stacked_votes
    from rab.ensemble.vote import VoteMatrices

    votes = stacked_votes(stacks, all_inputs(tests, np.float32), config)
    out = {}
    for test, part in row_slices(tests):
        sub = VoteMatrices(votes.hard[:, part], votes.soft[:, part], votes.sha256, votes.sigma)
        out[test.subset] = Certified(
            certify_votes(sub, alpha=method.alpha, votes=method.votes),
            expected_certificates(sub, votes=method.votes),
            sub,
        )
    return out


def _certify_ensemble(
    train: Dataset,
    tests: Sequence[TestSet],
    method: EnsembleMethod,
    progress: Progress | None,
    workdir: Path | None,
    train_batch: int | None,
) -> dict[str, Certified]:
    require("torch", "DNN-RAB ensembles")
    from rab.ensemble.predict import iter_members
    from rab.ensemble.train import train_ensemble

    config = method.config(train.input_shape, train.num_classes)
    X, y = np.asarray(train.X_train), np.asarray(train.y_train)
    return _train_then_vote(
        lambda directory, report: train_ensemble(config, X, y, directory, progress=report,
                                                 chunk=train_batch),
        lambda directory: certify_members(iter_members(directory), tests, method, config),
        progress, "training ensemble", workdir,
        f"ensemble-{config.member_fingerprint()[:12]}-{train.sha256[:12]}",
    )


def _train_then_vote(
    train: Callable[[Path, Callable[[int, int], None]], object],
    vote: Callable[[Path], dict[str, Certified]],
    progress: Progress | None,
    stage: str,
    workdir: Path | None,
    name: str,
) -> dict[str, Certified]:
    """``train(directory, report)`` then ``vote(directory)``, reporting ``stage`` and "voting"
    progress; the directory is ``workdir / name`` (finished models kept: a rerun resumes) or,
    without a workdir, a temporary one."""

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    def run(directory: Path) -> dict[str, Certified]:
        train(directory, report)
        if progress is not None:
            progress("voting", 0, 1)
        out = vote(directory)
        if progress is not None:
            progress("voting", 1, 1)
        return out

    if workdir is not None:
        return run(workdir / name)
    with tempfile.TemporaryDirectory(prefix=f"rab-{name.split('-')[0]}-") as tmp:
        return run(Path(tmp))


def certify_partition_votes(
    votes: np.ndarray, tests: Sequence[TestSet], scheme: Any, num_classes: int
) -> dict[str, Certified]:
    """Certify every test set from the (M, sum of test sizes) votes of the base models on the
    test sets concatenated in order: plurality vote as a radius-free ``CertificateBatch``, the
    DPA / FA poison count of ``scheme`` (``rab.partition.PartitionScheme``) beside it, the votes
    kept for storage. The service's vote unit and :func:`certify_test_sets` share it."""
    from rab.partition.certify import certify_votes, vote_certificates

    out = {}
    for test, rows in row_slices(tests):
        part = votes[:, rows]
        out[test.subset] = Certified(
            vote_certificates(part, num_classes), votes=part,
            poison_count=certify_votes(part, scheme, num_classes),
        )
    return out


def _certify_partition(
    train: Dataset,
    tests: Sequence[TestSet],
    method: PartitionMethod,
    progress: Progress | None,
    workdir: Path | None,
    train_batch: int | None,
) -> dict[str, Certified]:
    from rab.partition.predict import partition_votes
    from rab.partition.train import train_partition

    config = method.config(train.input_shape, train.num_classes)
    X, y = np.asarray(train.X_train), np.asarray(train.y_train)

    def vote(directory: Path) -> dict[str, Certified]:
        return certify_partition_votes(partition_votes(directory, all_inputs(tests, np.float32)),
                                       tests, config.scheme, train.num_classes)

    return _train_then_vote(
        lambda directory, report: train_partition(config, X, y, directory, progress=report,
                                                  chunk=train_batch),
        vote, progress, "training partition models", workdir,
        f"partition-{config.fingerprint()[:12]}-{train.sha256[:12]}",
    )


def certify_test_sets(
    train: Dataset,
    tests: Sequence[TestSet],
    method: Method,
    *,
    progress: Progress | None = None,
    workdir: Path | None = None,
    train_batch: int | None = None,
) -> dict[str, Certified]:
    """Certify every test set against the (possibly poisoned) training set ``train``.

    ``workdir`` keeps the ensemble's trained models (resumable: a rerun trains only the missing
    ones); without it they live in a temporary directory. ``train_batch``: ensemble members
    trained at once, stacked (``rab.ensemble.train_members``; None: 1 on a CPU), or partition
    base models (``rab.partition.train_partition``; None: its default). Both are unused by the
    K-NN.
    """
    if isinstance(method, KnnMethod):
        return _certify_knn(train, tests, method, progress)
    if isinstance(method, EnsembleMethod):
        return _certify_ensemble(train, tests, method, progress, workdir, train_batch)
    if isinstance(method, PartitionMethod):
        return _certify_partition(train, tests, method, progress, workdir, train_batch)
    raise TypeError(f"unknown method {method!r}")
