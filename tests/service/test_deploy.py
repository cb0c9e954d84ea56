"""The production deployment files: docker-compose.yml validates with Debian's docker-compose
(no engine needed) and the Dockerfile ships every package the project installs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from conftest import unavailable

from .conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"


def _compose(*args: str) -> str:
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose is not installed (apt-get install docker-compose)")
    out = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), *args], capture_output=True, text=True,
        timeout=60, cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_compose_file_is_valid() -> None:
    _compose("config", "-q")
    services = set(_compose("config", "--services").split())
    assert services == {"postgres", "redis", "minio", "store-init", "api", "worker-cpu",
                        "worker-gpu"}
    # no store volume: the API and the workers share only the database, broker and S3 URLs
    assert set(_compose("config", "--volumes").split()) == {"pgdata", "redisdata", "miniodata"}


def test_compose_wiring() -> None:
    config = _compose("config")
    assert config.count("healthcheck:") == 6  # every long-running service
    # api on db+redis, the bucket's creation on minio, workers on api
    assert config.count("condition: service_healthy") == 5
    assert config.count("condition: service_completed_successfully") == 1  # api on the bucket
    assert "capabilities:\n            - gpu" in config
    assert "RAB_DATABASE_URL: postgresql+psycopg://" in config
    assert "RAB_BROKER_URL: redis://redis:6379/0" in config
    assert "RAB_STORE_URL: s3://rab-artefacts/store" in config
    assert "AWS_ENDPOINT_URL: http://minio:9000" in config
    assert "RAB_STORE_DIR" not in config and "/var/lib/rab/store" not in config


def test_dockerfile_copies_every_installed_package() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "migrations" in packages
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, package
    assert "-c constraints.txt ." in dockerfile


def _dockerfile_copies() -> list[str]:
    """The paths the Dockerfile copies into the image's source directory."""
    lines = (REPO_ROOT / "Dockerfile").read_text().splitlines()
    return [part for line in lines if line.startswith("COPY ") for part in line.split()[1:-1]]


@pytest.mark.slow
def test_wheel_built_from_the_image_sources_ships_the_migrations(tmp_path: Path) -> None:
    # The image installs the package from what the Dockerfile copies, then migrates its database
    # from the installed package: that wheel must carry every revision and Alembic's files.
    source = tmp_path / "src"
    source.mkdir()
    for name in _dockerfile_copies():
        copy = shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy2
        copy(REPO_ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
         str(tmp_path), str(source)],
        check=True, timeout=300, capture_output=True,
    )
    (wheel,) = tmp_path.glob("rab_certify-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    revisions = {f"migrations/versions/{p.name}"
                 for p in (REPO_ROOT / "migrations" / "versions").glob("*.py")}
    expected = {"migrations/__init__.py", "migrations/env.py", "migrations/alembic.ini",
                "migrations/script.py.mako", *revisions}
    assert revisions and expected <= names, expected - names


def test_env_example_lists_the_compose_variables() -> None:
    example = REPO_ROOT / ".env.example"
    names = {line.split("=", 1)[0] for line in example.read_text().splitlines()
             if line and not line.startswith("#")}
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert names == used, names ^ used
    config = _compose("--env-file", str(example), "config")
    assert "POSTGRES_PASSWORD: change-me-postgres" in config


def test_dockerignore_leaves_out_the_venv_not_the_sources() -> None:
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "rab-data"} <= ignored  # a checkout's 6 GB never reach the build
    copied = set(_dockerfile_copies())
    assert copied and not copied & ignored, copied & ignored
