"""A job's stored fields <-> the library's :class:`rab.evaluation.EvaluationRequest`.

The one mapping between what the API stores in a job row (``method``, ``params``, ``attack``)
and what the library runs: the API builds the request from the body (seeds the user left out
are drawn here, by the library), checks it against the dataset with the library's rules and
stores :func:`stored_fields`; every worker rebuilds exactly the same request with
:func:`evaluation_request`. ``params`` holds the method's fields as the library records them
plus ``num_test`` and the fan-out option ``models_per_task``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contract.api import AnyJobIn
from rab.evaluation import EvaluationRequest
from rab.partition.hashing import PartitionScheme

__all__ = [
    "COUNTED_METHODS",
    "EXECUTION_KEYS",
    "TRAINED_METHODS",
    "evaluation_request",
    "models_to_train",
    "request_of",
    "stored_fields",
]

#: Parameters of how the service runs a job, not of what it computes.
EXECUTION_KEYS: tuple[str, ...] = ("models_per_task",)
#: Methods whose certificates carry a poison count (the K-NN's: the plain K-NN's).
COUNTED_METHODS: tuple[str, ...] = ("knn", "partition")
#: Methods whose jobs train models in chunks of ``models_per_task`` and then vote.
TRAINED_METHODS: tuple[str, ...] = ("ensemble", "partition")


def evaluation_request(
    method: str, params: Mapping[str, Any], attack: Mapping[str, Any] | None
) -> EvaluationRequest:
    """The library request of a job's stored (or requested) fields (ValueError if invalid)."""
    fields = {k: v for k, v in params.items() if k not in (*EXECUTION_KEYS, "num_test")}
    return EvaluationRequest.from_dict(
        {"method": {"name": method, **fields}, "attack": attack, "num_test": params.get("num_test")}
    )


def request_of(spec: AnyJobIn) -> EvaluationRequest:
    """The library request of a job body; seeds left out are drawn fresh (ValueError if the
    library refuses a value)."""
    attack = None if spec.attack is None else spec.attack.model_dump(exclude_none=True)
    return evaluation_request(spec.method, spec.params.model_dump(exclude_none=True), attack)


def stored_fields(
    request: EvaluationRequest, execution: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(params, attack)`` to store for ``request``: the library's records (every seed
    filled in), ``num_test`` and the ``execution`` options among :data:`EXECUTION_KEYS`."""
    record = request.to_dict()
    params = {k: v for k, v in record["method"].items() if k != "name"}
    params["num_test"] = record["num_test"]
    params.update({k: v for k, v in execution.items() if k in EXECUTION_KEYS})
    return params, record["attack"]


def models_to_train(method: str, params: Mapping[str, Any]) -> int:
    """Models a job of ``method`` with stored (or requested) ``params`` trains: N ensemble
    members, the k (DPA) or k d (FA) partition base models, 0 for the K-NN."""
    if method == "ensemble":
        return int(params["num_models"])
    if method == "partition":
        return PartitionScheme(params["k"], params["aggregation"], params["d"]).num_classifiers
    return 0
