"""One evaluation pipeline for the CLI, the experiment runner and the service workers.

data set -> optional backdoor attack (poisoned training set, backdoored test set) -> certify
with the exact smoothed K-NN or a DNN-RAB ensemble -> Table-1 metrics (paper section 7),
beside the undefended model's (Figure 3).  Modules, one job each:

- ``attack``: :class:`AttackSpec`, a validated attack;
- ``datasets``: :class:`DatasetSpec`, built-in names and files, class selection, subsets;
- ``testsets``: :func:`prepare`, :class:`TestSet`, :class:`Evaluation`;
- ``methods``: :class:`KnnMethod`, :class:`EnsembleMethod`, :class:`PartitionMethod`,
  :func:`certify_test_sets`;
- ``request``: :class:`EvaluationRequest`, the one mapping of a job / command / grid cell;
- ``summary``: certificates -> metrics and rows (no I/O);
- ``vanilla``: the undefended model's predictions and metrics;
- ``pipeline``: :func:`evaluate` and :class:`EvaluationResult`.
"""

from rab.evaluation.attack import ATTACK_KINDS, AttackSpec
from rab.evaluation.datasets import (
    BUILTIN_DATASETS,
    VISION_DATASETS,
    DatasetSpec,
    load_dataset,
    shared_data_dir,
    subsample,
)
from rab.evaluation.methods import (
    METHODS,
    Certified,
    EnsembleMethod,
    KnnMethod,
    Method,
    PartitionMethod,
    Progress,
    certify_members,
    certify_partition_votes,
    certify_stacked,
    certify_test_sets,
    knn_training_of,
    method_from_dict,
)
from rab.evaluation.pipeline import EvaluationResult, evaluate
from rab.evaluation.request import EvaluationRequest
from rab.evaluation.summary import (
    attack_success_rate,
    certificate_rows,
    chunks,
    concat,
    set_metrics,
    summary,
    take,
)
from rab.evaluation.testsets import Evaluation, TestSet, all_inputs, prepare
from rab.evaluation.vanilla import vanilla_metrics, vanilla_predictions

__all__ = [
    "ATTACK_KINDS",
    "BUILTIN_DATASETS",
    "METHODS",
    "VISION_DATASETS",
    "AttackSpec",
    "Certified",
    "DatasetSpec",
    "EnsembleMethod",
    "Evaluation",
    "EvaluationRequest",
    "EvaluationResult",
    "KnnMethod",
    "Method",
    "PartitionMethod",
    "Progress",
    "TestSet",
    "all_inputs",
    "attack_success_rate",
    "certificate_rows",
    "certify_members",
    "certify_partition_votes",
    "certify_stacked",
    "certify_test_sets",
    "chunks",
    "concat",
    "evaluate",
    "knn_training_of",
    "load_dataset",
    "method_from_dict",
    "prepare",
    "set_metrics",
    "shared_data_dir",
    "subsample",
    "summary",
    "take",
    "vanilla_metrics",
    "vanilla_predictions",
]
