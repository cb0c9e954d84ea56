"""The evaluation pipeline: data set -> optional attack -> certify (K-NN or ensemble) -> metrics.

Used by ``rab certify``, the experiment runner and the service workers.  Steps:

1. :func:`rab.evaluation.prepare`: poison the training set, build the backdoored test set;
2. :func:`rab.evaluation.certify_test_sets`: certificates (pA, pB, radius of eq. 14) per test
   point of the clean and backdoored test sets;
3. :func:`rab.evaluation.summary`: Table-1 metrics at the radii (accuracy, certified accuracy
   and certified rate), attack success rate, and with an attack the certified accuracy at the
   poisoning's own total norm (the share of points the guarantee covers against THIS attack);
4. optionally :func:`rab.evaluation.vanilla_predictions`: the undefended model (Figure 3).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rab.data import Dataset
from rab.evaluation.attack import AttackSpec
from rab.evaluation.methods import Certified, Method, Progress, certify_test_sets
from rab.evaluation.summary import set_metrics, summary
from rab.evaluation.testsets import Evaluation, prepare
from rab.evaluation.vanilla import vanilla_metrics, vanilla_predictions
from rab.metrics import DEFAULT_POISON_COUNTS, DEFAULT_RADII, certified_accuracy, count_summary

__all__ = ["EvaluationResult", "evaluate", "evaluation_metrics"]


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Everything one evaluation produced (see :meth:`to_dict` for the JSON layout)."""

    evaluation: Evaluation
    method: Method
    radii: tuple[float, ...]
    certified: dict[str, Certified]
    metrics: dict[str, Any]
    vanilla: dict[str, dict[str, float]] | None
    seconds: dict[str, float] = field(default_factory=dict)

    def curves(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(prediction, labels, radius) per labelled test set, for ``rab.plots``."""
        return {
            t.subset: (self.certified[t.subset].certificates.prediction, t.labels,
                       self.certified[t.subset].certificates.radius)
            for t in self.evaluation.tests
            if t.labels is not None
        }

    def count_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(prediction, labels, poison count) per labelled test set with a count certificate,
        for ``rab.plots.poison_count_curve`` (the K-NN's is the plain K-NN's)."""
        return {
            t.subset: (count.prediction, t.labels, count.count)
            for t in self.evaluation.tests
            if t.labels is not None and (count := self.certified[t.subset].poison_count)
            is not None
        }

    def to_dict(self, *, certificates: bool = True) -> dict[str, Any]:
        """JSON-ready record: data set, attack, poisoning, method, metrics (with the ensembles'
        point-estimate metrics, NOT certified), vanilla metrics, timings and, with ``certificates``,
        the per-point label / prediction / pA / pB / radius arrays of every test set."""
        ev = self.evaluation
        out: dict[str, Any] = {
            "dataset": ev.clean.summary(),
            "train_sha256": ev.train.sha256,
            "train_order": ev.clean.meta.get("train_order"),
            "attack": None if ev.attack is None else ev.attack.to_dict(),
            "poisoning": ev.poisoning,
            "method": self.method.to_dict(),
            "radii": list(self.radii),
            "metrics": self.metrics,
            "vanilla": self.vanilla,
            "seconds": self.seconds,
        }
        if certificates:
            out["certificates"] = {
                t.subset: _arrays(t.labels, t.attack_labels, self.certified[t.subset])
                for t in ev.tests
            }
        return out


def _arrays(labels: np.ndarray | None, attack_labels: np.ndarray | None,
            certified: Certified) -> dict[str, Any]:
    batch = certified.certificates
    out: dict[str, Any] = {
        "label": None if labels is None else labels.tolist(),
        "prediction": batch.prediction.tolist(),
        "top_class": batch.top_class.tolist(),
        "p_a": batch.p_a.tolist(),
        "p_b": batch.p_b.tolist(),
        "radius": batch.radius.tolist(),
        "sigma": batch.sigma,
        "bound": batch.method,
        "alpha": batch.alpha,
        "num_votes": None if batch.num_votes is None else np.asarray(batch.num_votes).tolist(),
    }
    if attack_labels is not None:
        out["attack_label"] = attack_labels.tolist()
    if certified.poison_count is not None:
        out["poison_count"] = certified.poison_count.to_dict()
    return out


def evaluation_metrics(
    ev: Evaluation, certified: Mapping[str, Certified], radii: Sequence[float] = DEFAULT_RADII,
    counts: Sequence[int] = DEFAULT_POISON_COUNTS,
) -> dict[str, Any]:
    """The metrics of one evaluation, as the CLI, the grids and the service report them.

    Table-1 metrics per test set and the top-level figures (:func:`summary`); under an attack
    the certified accuracy at the poisoning's own total norm sqrt(sum_i ||delta_i||^2)
    (eq. 14: the share of test points provably predicted as without these training patterns,
    correctly); for an ensemble the same metrics of its point-estimate radii under
    ``expected_not_certified`` (NOT certificates).  Where a poison-count certificate exists
    (partition aggregation; the K-NN's plain-K-NN count) each test set's metrics gain
    ``poison_count``: the classifier it is proved for, the accuracy of ITS prediction, and
    certified accuracy / rate at ``counts`` (``rab.metrics.count_summary``).
    """
    metrics = summary({t.subset: (t, certified[t.subset].certificates) for t in ev.tests}, radii)
    if ev.poisoning is not None:
        total = float(ev.poisoning["total_norm"])
        metrics["attack_total_norm"] = total
        for test in ev.tests:
            if test.labels is None:
                continue
            batch = certified[test.subset].certificates
            metrics[test.subset]["certified_accuracy_at_attack_norm"] = float(
                certified_accuracy(batch.prediction, test.labels, batch.radius, [total])[0]
            )
    for test in ev.tests:
        count = certified[test.subset].poison_count
        if count is None or test.labels is None:
            continue
        metrics[test.subset]["poison_count"] = {
            "classifier": count.classifier, "method": count.method,
            **count_summary(count.prediction, test.labels, count.count, counts),
        }
    expected = {
        t.subset: set_metrics(t, point, radii)
        for t in ev.tests
        if (point := certified[t.subset].expected) is not None and t.labels is not None
    }
    if expected:
        metrics["expected_not_certified"] = expected
    return metrics


def evaluate(
    dataset: Dataset,
    method: Method,
    attack: AttackSpec | None = None,
    *,
    radii: Sequence[float] = DEFAULT_RADII,
    num_test: int | None = None,
    vanilla: bool = True,
    progress: Progress | None = None,
    workdir: Path | None = None,
    train_batch: int | None = None,
) -> EvaluationResult:
    """Run the whole pipeline on ``dataset`` (see the module docstring); ``workdir`` and
    ``train_batch`` as in :func:`certify_test_sets`."""
    radii = tuple(float(r) for r in radii)
    if not radii or any(not np.isfinite(r) or r < 0 for r in radii):
        raise ValueError(f"radii must be finite and >= 0, got {list(radii)}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    ev = prepare(dataset, attack, num_test=num_test)
    seconds["prepare"] = time.perf_counter() - start
    start = time.perf_counter()
    certified = certify_test_sets(
        ev.train, ev.tests, method, progress=progress, workdir=workdir, train_batch=train_batch
    )
    seconds["certify"] = time.perf_counter() - start
    metrics = evaluation_metrics(ev, certified, radii)
    plain = None
    if vanilla:
        start = time.perf_counter()
        if progress is not None:
            progress("vanilla model", 0, 1)
        plain = vanilla_metrics(ev.tests, vanilla_predictions(ev.train, ev.tests, method))
        if progress is not None:
            progress("vanilla model", 1, 1)
        seconds["vanilla"] = time.perf_counter() - start
    return EvaluationResult(ev, method, radii, certified, metrics, plain, seconds)
