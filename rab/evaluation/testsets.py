"""The data of one evaluation: the (poisoned) training set and the test sets to certify.

With an attack (paper section 7.1, REFERENCE section 4) the training set is poisoned
(``rab.attacks.poison_training_set``: r_p of the points, drawn from the non-target classes with
the attack's seed, get the trigger and the target label) and a backdoored test set is built: the
non-target test points with the trigger and their TRUE labels (Table 1 protocol), plus the
target label of each (``attack_labels``) for the attack-success view.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rab.attacks import backdoor_test_set, poison_training_set
from rab.data import Dataset
from rab.evaluation.attack import AttackSpec

__all__ = ["Evaluation", "TestSet", "all_inputs", "prepare", "row_slices"]


@dataclass(frozen=True, eq=False)
class TestSet:
    """Inputs to certify with their true labels (None for unlabelled inputs).

    ``attack_labels`` is the attacker's label of each input (backdoored test sets only).
    """

    __test__ = False  # not a pytest test class

    subset: str
    X: np.ndarray
    labels: np.ndarray | None
    attack_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("labels", "attack_labels"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.X):
                raise ValueError(
                    f"test set {self.subset!r}: {len(self.X)} inputs but {len(value)} {name}"
                )

    def __len__(self) -> int:
        return len(self.X)


def all_inputs(tests: Sequence[TestSet], dtype: Any = None) -> np.ndarray:
    """The inputs of every test set, concatenated in order (one pass over several sets)."""
    return np.concatenate([np.asarray(t.X, dtype=dtype) for t in tests])


def row_slices(tests: Sequence[TestSet]) -> Iterator[tuple[TestSet, slice]]:
    """Each test set with the rows it holds in :func:`all_inputs` of ``tests``."""
    offset = 0
    for test in tests:
        yield test, slice(offset, offset + len(test))
        offset += len(test)


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The training set a model is built from, the clean data set it came from, the test sets.

    ``poisoning`` is the poisoning record (``rab.attacks``: trigger, rate, target, seed, number
    of poisoned points, effective and total norm of the patterns, eq. 14's left side) or None.
    """

    train: Dataset
    clean: Dataset
    tests: tuple[TestSet, ...]
    attack: AttackSpec | None
    poisoning: dict[str, Any] | None

    def test(self, subset: str) -> TestSet:
        """The test set named ``subset`` ("clean" or "backdoor")."""
        for t in self.tests:
            if t.subset == subset:
                return t
        raise KeyError(f"no test set {subset!r}; have {[t.subset for t in self.tests]}")


def prepare(
    dataset: Dataset, attack: AttackSpec | None = None, *, num_test: int | None = None
) -> Evaluation:
    """Poison the training set and build the backdoored test set when ``attack`` is given.

    ``num_test`` keeps the first ``num_test`` points of each test set (None: all). Raises
    ValueError for a trigger that does not fit the inputs, a target outside the classes, a rate
    asking for more points than the non-target classes hold, or ``num_test < 1``.
    """
    if num_test is not None and num_test < 1:
        raise ValueError(f"num_test must be at least 1, got {num_test}")
    keep = slice(None, num_test)
    clean = TestSet("clean", dataset.X_test[keep], dataset.y_test[keep])
    if attack is None:
        return Evaluation(dataset, dataset, (clean,), None, None)
    trigger = attack.trigger(dataset.input_shape)
    poisoned = poison_training_set(
        dataset, trigger, rate=attack.rate, target=attack.target, seed=attack.seed,
        mode=attack.mode, clip=attack.clip,  # type: ignore[arg-type]
    )
    backdoor = backdoor_test_set(dataset, trigger, target=attack.target, clip=attack.clip)
    triggered = TestSet(
        "backdoor", backdoor.X[keep], backdoor.y_true[keep], backdoor.y_attack[keep]
    )
    record = dict(poisoned.dataset.meta.get("poisoning", {}))
    record["test_effective_norm_range"] = [
        float(backdoor.effective_norms.min()), float(backdoor.effective_norms.max())
    ]
    return Evaluation(poisoned.dataset, dataset, (clean, triggered), attack, record)
