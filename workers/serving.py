"""Hot models for certification requests: an LRU cache bounded in bytes, keyed by model id.

A certify request against a model that is hot skips the store, the hash checks and the
rebuild of every member with its seeded initialisation and test-time noise u_k: those were
done once, when the model was loaded (its bytes verified against their SHA-256 then). An
ensemble is kept stacked (``rab.ensemble.stacked.StackedMembers``: one set of stacked
parameters and one u_k tensor per chunk of members, on the worker's device, CUDA when it has
one), a partition model as its base models, a K-NN model as its verified training set (with
its split prepared for the K-NN once: ``rab.evaluation.knn_training_of``). The bound
(``RAB_MODEL_CACHE_BYTES``) counts the stacked weights, buffers and noise, the base models'
weights, and the training arrays, prepared ones included; the least recently used models go
first, and a model larger than the whole bound is served without being kept. Cold or
evicted, a request gets the same certificates, only later.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["HotModel", "ModelCache"]


@dataclass(frozen=True)
class HotModel:
    """A loaded model: ``stacks`` (ensemble, ``rab.ensemble.stacked.StackedMembers``),
    ``train`` (K-NN, ``rab.data.Dataset``) or ``base_models`` (partition aggregation:
    ``rab.ensemble.Member``, None for an empty partition; ``workers.partitions``), with its
    size in bytes, and the model's and its dataset's rows as read when it was loaded (both
    immutable), so that a request for a hot model reads neither again."""

    stacks: tuple[Any, ...] | None
    train: Any
    nbytes: int
    base_models: tuple[Any, ...] | None = None
    model: Any = None
    dataset: Any = None


class ModelCache:
    """Loaded models by id, least recently used evicted first, at most ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._models: OrderedDict[str, HotModel] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self._models.values())

    def hot(self, model_id: str) -> HotModel | None:
        """The model ``model_id`` if it is hot (counted as a hit), else None; loads
        nothing."""
        with self._lock:
            hot = self._models.get(model_id)
            if hot is not None:
                self._models.move_to_end(model_id)
                self.hits += 1
            return hot

    def get(self, model_id: str, load: Callable[[], HotModel]) -> HotModel:
        """The hot model ``model_id``, loaded by ``load()`` on a miss."""
        hot = self.hot(model_id)
        if hot is not None:
            return hot
        with self._lock:
            self.misses += 1
        hot = load()
        with self._lock:
            if hot.nbytes <= self.max_bytes:
                self._models[model_id] = hot
                self._models.move_to_end(model_id)
                while self.nbytes > self.max_bytes:
                    self._models.popitem(last=False)
        return hot
