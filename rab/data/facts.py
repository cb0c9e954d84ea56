"""What a check needs to know of a data set without its arrays: shapes and class counts.

The service keeps these in its dataset rows; the library's rules (attack validity, poison
count, method parameters) are written against them, so that the API refuses a job with the
library's own words before a worker loads any data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rab.data.dataset import Dataset

__all__ = ["DataFacts"]


@dataclass(frozen=True)
class DataFacts:
    """Input shape and per-class counts of the training and test splits."""

    input_shape: tuple[int, ...]
    train_counts: tuple[int, ...]
    test_counts: tuple[int, ...]

    def __init__(
        self, input_shape: Sequence[int], train_counts: Sequence[int], test_counts: Sequence[int]
    ) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in input_shape))
        object.__setattr__(self, "train_counts", tuple(int(c) for c in train_counts))
        object.__setattr__(self, "test_counts", tuple(int(c) for c in test_counts))
        if len(self.train_counts) != len(self.test_counts) or len(self.train_counts) < 2:
            raise ValueError("a data set needs the counts of at least two classes per split")

    @classmethod
    def of(cls, dataset: Dataset) -> DataFacts:
        """The facts of an in-memory data set."""
        c = dataset.num_classes
        return cls(
            dataset.input_shape,
            np.bincount(np.asarray(dataset.y_train), minlength=c).tolist(),
            np.bincount(np.asarray(dataset.y_test), minlength=c).tolist(),
        )

    @property
    def num_classes(self) -> int:
        return len(self.train_counts)

    @property
    def train_size(self) -> int:
        return sum(self.train_counts)

    @property
    def test_size(self) -> int:
        return sum(self.test_counts)
