"""From certificate batches to the paper's metrics (Table 1) and per-point rows; no I/O.

For a test set with labels y_i, predictions y_hat_i (ABSTAIN = -1 never correct) and radii R_i
(eq. 14): prediction accuracy, certified rate mean(R_i > R) and certified accuracy
mean(y_hat_i == y_i and R_i > R) (``rab.metrics``).  On a backdoored test set also the attack
success rate: the share of triggered inputs predicted as the attacker's label.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from rab.bounds import ABSTAIN, CertificateBatch
from rab.evaluation.testsets import TestSet
from rab.metrics import DEFAULT_RADII, summarize

if TYPE_CHECKING:
    from rab.partition.certificate import PoisonCountBatch

__all__ = [
    "attack_success_rate",
    "certificate_rows",
    "chunks",
    "concat",
    "set_metrics",
    "summary",
    "take",
]


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``size`` elements."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def concat(batches: Sequence[CertificateBatch]) -> CertificateBatch:
    """The certificates of consecutive chunks of test points as one batch.

    The chunks must share sigma, method, alpha and rule (ValueError otherwise).
    """
    if not batches:
        raise ValueError("concat needs at least one certificate batch")
    first = batches[0]
    for b in batches[1:]:
        if (b.sigma, b.method, b.alpha, b.rule) != (first.sigma, first.method, first.alpha,
                                                    first.rule):
            raise ValueError("cannot concatenate certificates of different sigma/method/alpha/rule")
    arrays = {
        name: np.concatenate([getattr(b, name) for b in batches])
        for name in ("prediction", "top_class", "p_a", "p_b", "radius")
    }
    votes = [b.num_votes for b in batches]
    num_votes: int | np.ndarray | None = votes[0]
    if any(isinstance(v, np.ndarray) for v in votes) or len(set(map(str, votes))) > 1:
        num_votes = np.concatenate(
            [np.broadcast_to(np.asarray(v), (len(b),)) for v, b in zip(votes, batches, strict=True)]
        )
    return CertificateBatch(
        **arrays, sigma=first.sigma, method=first.method, alpha=first.alpha,
        num_votes=num_votes, rule=first.rule,
    )


_Batch = TypeVar("_Batch", CertificateBatch, "PoisonCountBatch")


def take(batch: _Batch, rows: slice) -> _Batch:
    """The test points ``rows`` of a batch of per-point certificates (the inverse of
    :func:`concat`): every per-point array sliced, the batch's settings kept."""
    n = len(batch)
    values = {}
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        per_point = isinstance(value, np.ndarray) and value.shape[:1] == (n,)
        values[field.name] = value[rows] if per_point else value
    return type(batch)(**values)


def attack_success_rate(prediction: np.ndarray, attack_labels: np.ndarray) -> float:
    """Share of backdoored inputs predicted as the attacker's label (abstentions do not count)."""
    pred = np.asarray(prediction).reshape(-1)
    target = np.asarray(attack_labels).reshape(-1)
    if pred.shape != target.shape or pred.size == 0:
        raise ValueError(f"need as many predictions as attack labels, got {pred.size} and "
                         f"{target.size}")
    return float(np.mean(pred == target))


def set_metrics(
    test: TestSet, batch: CertificateBatch, radii: Sequence[float] = DEFAULT_RADII
) -> dict[str, Any]:
    """Table-1 metrics of one labelled test set, plus the attack success rate when backdoored."""
    if test.labels is None:
        raise ValueError(f"test set {test.subset!r} has no labels: nothing to score")
    if len(batch) != len(test):
        raise ValueError(f"{len(batch)} certificates for {len(test)} inputs of {test.subset!r}")
    out = summarize(batch.prediction, test.labels, batch.radius, radii).as_dict()
    if test.attack_labels is not None:
        out["attack_success_rate"] = attack_success_rate(batch.prediction, test.attack_labels)
    return out


def summary(
    results: Mapping[str, tuple[TestSet, CertificateBatch]],
    radii: Sequence[float] = DEFAULT_RADII,
) -> dict[str, Any]:
    """Metrics per test set; with a backdoored set also clean/backdoor accuracy and success rate
    at the top level (the columns of the paper's Tables 2 and 5)."""
    out: dict[str, Any] = {
        subset: set_metrics(test, batch, radii) for subset, (test, batch) in results.items()
    }
    if "clean" in out:
        out["clean_accuracy"] = out["clean"]["accuracy"]
    if "backdoor" in out:
        out["backdoor_accuracy"] = out["backdoor"]["accuracy"]
        out["attack_success_rate"] = out["backdoor"]["attack_success_rate"]
    return out


def certificate_rows(
    subset: str, batch: CertificateBatch, labels: np.ndarray | None,
    count: PoisonCountBatch | None = None,
) -> list[dict[str, Any]]:
    """One JSON-ready row per test point: label, prediction, top class, pA, pB, radius; with
    a poison-count certificate ``count`` also ``poison_count``, ``poison_modifications`` and
    ``count_prediction`` (the prediction the count is proved for: the plain K-NN's beside a
    smoothed K-NN, the same vote for partition aggregation)."""
    if count is not None and len(count) != len(batch):
        raise ValueError(f"{len(count)} poison counts for {len(batch)} certificates")
    rows = []
    for i in range(len(batch)):
        prediction = int(batch.prediction[i])
        label = None if labels is None else int(labels[i])
        rows.append(
            {
                "subset": subset,
                "sample_index": i,
                "label": label,
                "prediction": prediction,
                "top_class": int(batch.top_class[i]),
                "p_a": float(batch.p_a[i]),
                "p_b": float(batch.p_b[i]),
                "radius": float(batch.radius[i]),
                "abstain": prediction == ABSTAIN,
                "correct": None if label is None else prediction == label,
            }
        )
        if count is not None:
            rows[-1].update(poison_count=int(count.count[i]),
                            poison_modifications=int(count.modifications[i]),
                            count_prediction=int(count.prediction[i]))
    return rows
