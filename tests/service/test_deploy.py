"""The production deployment files: docker-compose.yml validates with Debian's docker-compose
(no engine needed) with the example settings and refuses to render without the secrets; the
Dockerfile installs the dependencies before it copies the source, ships every package the
project installs, and puts torch only in the workers' images; .dockerignore lets in only what
it copies."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import unavailable

from .conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
EXAMPLE = REPO_ROOT / ".env.example"
SECRETS = ("POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")


def _settings(path: Path) -> dict[str, str]:
    """The variables an env file sets."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line and not line.startswith("#"))
    return dict(pairs)


def _compose_run(*args: str, env_file: Path = EXAMPLE) -> subprocess.CompletedProcess[str]:
    """``docker-compose`` with the settings of ``env_file`` only (none from this process)."""
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose is not installed (apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if k not in _settings(EXAMPLE)}
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--env-file", str(env_file), *args],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=env,
    )


def _compose(*args: str) -> str:
    out = _compose_run(*args)
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


def test_compose_publishes_the_api_on_localhost_only() -> None:
    config = yaml.safe_load(_compose("config"))
    published = [s for name, s in config["services"].items() if s.get("ports")]
    assert published == [config["services"]["api"]]
    assert published[0]["ports"] == ["127.0.0.1:8000:8000/tcp"]


def test_compose_builds_one_image_per_role() -> None:
    services = yaml.safe_load(_compose("config"))["services"]
    built = {name: s for name, s in services.items() if "build" in s}
    assert {name: (s["image"], s["build"]["args"]) for name, s in built.items()} == {
        "api": ("rab-certify-api:latest", {"EXTRAS": "service"}),
        "worker-cpu": ("rab-certify-worker-cpu:latest", {
            "EXTRAS": "service torch", "TORCH_INDEX": "https://download.pytorch.org/whl/cpu"}),
        "worker-gpu": ("rab-certify-worker-gpu:latest", {"EXTRAS": "service torch"}),
    }
    assert all(s["build"]["context"] == str(REPO_ROOT) for s in built.values())
    # the API image holds no torch; the workers' do
    script = _requirements_script()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for name, service in built.items():
        wanted = " ".join(script.requirements(project, service["build"]["args"]["EXTRAS"].split()))
        assert ("torch" in wanted) == (name != "api"), (name, wanted)


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_render_without_a_secret(secret: str, tmp_path: Path) -> None:
    settings = _settings(EXAMPLE)
    for value in (None, ""):
        env_file = tmp_path / ".env"
        kept = {k: v for k, v in settings.items() if k != secret}
        if value is not None:
            kept[secret] = value
        env_file.write_text("".join(f"{k}={v}\n" for k, v in kept.items()))
        out = _compose_run("config", env_file=env_file)
        assert out.returncode != 0, out.stdout
        assert f"{secret} is required, set it in .env (see .env.example)" in out.stderr, out.stderr


def _requirements_script():  # docker/requirements.py: what the image's first layer installs
    spec = importlib.util.spec_from_file_location("requirements",
                                                  REPO_ROOT / "docker" / "requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dockerfile_copies_every_installed_package_after_the_dependencies() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    lines = (REPO_ROOT / "Dockerfile").read_text().splitlines()
    assert "migrations" in packages
    copies = [lines.index(f"COPY {package} ./{package}") for package in packages]
    dependencies = lines.index("COPY pyproject.toml constraints.txt docker/requirements.py ./")
    installs = [i for i, line in enumerate(lines) if "pip install -c constraints.txt -r" in line]
    assert dependencies < min(installs) and max(installs) < min(copies)
    assert lines[max(copies) + 1].startswith("RUN pip install --no-deps . ")


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
        (source / name).parent.mkdir(parents=True, exist_ok=True)
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
    names = set(_settings(EXAMPLE))
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert names == used, names ^ used
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert required == set(SECRETS)  # every secret required, nothing else
    config = _compose("config")
    assert "POSTGRES_PASSWORD: change-me-postgres" in config


def _ignored(path: str, rules: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last rule matching it or a
    folder above it decides (``*`` within one path segment, ``**/`` any folders, ``!`` lets in)."""
    parts = path.split("/")
    ignored = False
    for rule in rules:
        pattern = rule.removeprefix("!")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not rule.startswith("!")
    return ignored


def test_dockerignore_lets_in_only_what_the_dockerfile_copies() -> None:
    rules = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    copied = _dockerfile_copies()
    sent = {path for path in tracked if not _ignored(path, rules)}
    assert sent == {path for path in tracked
                    if any(path == c or path.startswith(f"{c}/") for c in copied)}
    # a checkout's 6 GB never reach the build
    for path in (".venv/lib/python3.11/site-packages/torch/__init__.py", ".git/HEAD",
                 "rab-data/rab.db", "rab-results/result.json", "demo-output/knn.png",
                 "bench/results/reproduce/table5/models/m.pt", "tests/service/conftest.py",
                 "rab/__pycache__/bounds.cpython-311.pyc", ".env", "build/lib/rab/bounds.py",
                 ".mypy_cache/3.11/rab.json", "rab_certify.egg-info/PKG-INFO"):
        assert _ignored(path, rules), path
