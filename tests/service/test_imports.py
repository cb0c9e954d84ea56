"""Torch must never be imported by the API, nor by a worker before Celery forks its pool."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO_ROOT


@pytest.mark.parametrize(
    "modules", ["app.main", "workers.celery_app", "workers.tasks", "rab.cli.service"]
)
def test_module_does_not_import_torch(modules: str) -> None:
    code = f"import sys, {modules}; app = {modules}; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120, check=True,
    )
    assert out.stdout.strip() == "False"
