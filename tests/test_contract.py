"""The API's documents say exactly what the library accepts: every enumeration in the OpenAPI
schema equals the library constant it comes from, and every request field is a library
field of the same name (one vocabulary)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from app.main import create_app
from app.settings import Settings
from contract.api import AttackIn, EnsembleParams, KnnParams
from contract.jobs import EXECUTION_KEYS
from rab.architectures import ARCHITECTURES
from rab.data.tabular import SPAMBASE_VARIANTS
from rab.ensemble.certify import BOUNDS
from rab.evaluation import BUILTIN_DATASETS, VISION_DATASETS, AttackSpec, EnsembleMethod, KnnMethod
from rab.evaluation.attack import ATTACK_KINDS, POISON_MODES
from rab.knn.levels import EDGE_RULES


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))
    return app.openapi()["components"]["schemas"]  # type: ignore[no-any-return]


def _enum(schemas: dict[str, Any], model: str, field: str) -> set[Any]:
    prop = schemas[model]["properties"][field]
    options = prop.get("anyOf", [prop])
    return {value for option in options for value in option.get("enum", [])}


@pytest.mark.parametrize(
    ("model", "field", "library"),
    [
        ("AttackIn", "kind", ATTACK_KINDS),
        ("AttackIn", "mode", POISON_MODES),
        ("EnsembleParams", "arch", ARCHITECTURES),
        ("EnsembleParams", "bound", BOUNDS),
        ("BuiltinDatasetIn", "builtin", (*BUILTIN_DATASETS, *VISION_DATASETS)),
        ("BuiltinDatasetIn", "variant", SPAMBASE_VARIANTS),
        ("KnnParams", "edge_rule", EDGE_RULES),
    ],
)
def test_api_enumerations_are_the_library_constants(
    schemas: dict[str, Any], model: str, field: str, library: tuple[str, ...]
) -> None:
    assert _enum(schemas, model, field) == set(library)


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - {"name"}


@pytest.mark.parametrize(
    ("request_model", "library_class"),
    [(AttackIn, AttackSpec), (KnnParams, KnnMethod), (EnsembleParams, EnsembleMethod)],
)
def test_request_fields_are_library_fields(request_model: Any, library_class: type) -> None:
    extra = set(request_model.model_fields) - _fields(library_class)
    assert extra <= {"num_test", *EXECUTION_KEYS}, extra

