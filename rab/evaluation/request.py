"""One evaluation as every entry point states it: a method, an optional attack, a test subset.

The service's job rows, the local ``rab certify`` command and the experiment grids all build an
:class:`EvaluationRequest` from the same field names (:func:`method_from_dict`,
:meth:`AttackSpec.from_dict`), check it against the data (:meth:`EvaluationRequest.check`, the
rules of the library, which the API runs before queueing anything) and run it with
:func:`rab.evaluation.evaluate` or, fanned out over workers, with the same library steps. Seeds
left out are drawn fresh when the request is built and recorded in :meth:`to_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rab.data import DataFacts, Dataset
from rab.evaluation.attack import AttackSpec
from rab.evaluation.methods import Method, method_from_dict
from rab.evaluation.testsets import Evaluation, prepare

__all__ = ["EvaluationRequest"]


@dataclass(frozen=True)
class EvaluationRequest:
    """``method`` (exact K-NN or DNN-RAB ensemble), ``attack`` (None: no poisoning) and
    ``num_test`` (certify only the first ``num_test`` points of each test set; None: all)."""

    method: Method
    attack: AttackSpec | None = None
    num_test: int | None = None

    def __post_init__(self) -> None:
        if self.num_test is not None and (
            isinstance(self.num_test, bool) or not isinstance(self.num_test, int)
            or self.num_test < 1
        ):
            raise ValueError(f"num_test must be an integer >= 1, got {self.num_test!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationRequest:
        """From ``{"method": {"name": ..., ...}, "attack": {...} | None, "num_test": ...}``
        (the layout of :meth:`to_dict`); unknown keys raise ValueError."""
        unknown = set(data) - {"method", "attack", "num_test"}
        if unknown:
            raise ValueError(f"unknown evaluation keys {sorted(unknown)}")
        if "method" not in data:
            raise ValueError("an evaluation needs a method")
        attack = data.get("attack")
        return cls(
            method_from_dict(data["method"]),
            None if attack is None else AttackSpec.from_dict(attack),
            data.get("num_test"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record with every seed filled in (inverse of :meth:`from_dict`)."""
        return {
            "method": self.method.to_dict(),
            "attack": None if self.attack is None else self.attack.to_dict(),
            "num_test": self.num_test,
        }

    def check(self, facts: DataFacts) -> None:
        """ValueError naming the first parameter that cannot work on data of ``facts``: the
        method's (K beyond the training set, an architecture that cannot take the inputs),
        the attack's (trigger, target, poison count) and ``num_test`` beyond the test set."""
        self.method.check(facts)
        if self.attack is not None:
            self.attack.check(facts)
        if self.num_test is not None and self.num_test > facts.test_size:
            raise ValueError(
                f"num_test={self.num_test} exceeds the test set size {facts.test_size}"
            )

    def prepare(self, dataset: Dataset) -> Evaluation:
        """The (poisoned) training set and the test sets of this request on ``dataset``."""
        return prepare(dataset, self.attack, num_test=self.num_test)
