"""Full K-NN flow on real Spambase through the production stack (PostgreSQL, Redis, a Celery
worker process, uvicorn): upload the UCI file over HTTP, certify with a backdoor attack, read
everything back and compare with the library run in-process."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .flow import run_spambase_knn_flow

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_knn_on_spambase_with_attack(client_a: httpx.Client, shared_data: Path) -> None:
    job = run_spambase_knn_flow(client_a, shared_data)
    assert job["links"]["model"].startswith("/v1/models/")
