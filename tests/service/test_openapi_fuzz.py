"""schemathesis against the live service's OpenAPI document: for every operation, a bounded,
seeded (derandomized) number of valid and invalid requests over real HTTP, each answered without
a server error, with a documented status, content type and a body of the documented schema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Service

EXAMPLES = 25  # per operation and generation mode
CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance,
    response_schema_conformance,
]

pytestmark = [pytest.mark.services, pytest.mark.fuzz]


def _fuzzer(
    service: Service, key: str, strategy: Any, failures: list[str]
) -> Callable[[], None]:
    """A seeded hypothesis run of ``strategy``'s cases, each failure appended to ``failures``."""

    @given(strategy)
    @settings(
        max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        try:
            case.call_and_validate(
                base_url=service.base_url, headers={"X-API-Key": key}, checks=CHECKS, timeout=60
            )
        except (FailureGroup, Exception) as exc:  # collected, reported at the end
            failures.append(str(exc)[:1500])

    return run


def test_live_openapi_has_no_server_errors_or_schema_violations(
    service: Service, key_a: str
) -> None:
    schema = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures: dict[str, list[str]] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            found = failures.setdefault(f"{operation.label} ({mode.value})", [])
            try:
                _fuzzer(service, key_a, operation.as_strategy(generation_mode=mode), found)()
            except Unsatisfiable:  # nothing to make invalid (an operation without inputs)
                assert mode is GenerationMode.NEGATIVE, operation.label
    failed = {label: found for label, found in failures.items() if found}
    report = "\n\n".join(f"{label}:\n" + "\n--\n".join(f[:3]) for label, f in failed.items())
    assert not failed, report
