"""The wheel built from the repository works on its own: installed into a fresh virtual
environment (its dependencies from this one's site-packages, the checkout nowhere on the path),
it lists the shipped reproduction grids and runs one. Installed with no extra (numpy, scipy and
threadpoolctl from the package index, pinned by constraints.txt) it certifies a K-NN without
torch, and its ``rab`` script names the extras to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from rab.cli import MISSING_EXTRA

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


#: The environment of the commands run in the fresh venvs: nothing of the checkout on the path.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(args, cwd=cwd, env=CLEAN_ENV if env is None else env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{args}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the checkout's files (a build in place would leave build/ behind)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                  cwd=REPO_ROOT).splitlines()
    for name in listed:
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
          str(root), str(source)], cwd=root)
    (built,) = root.glob("rab_certify-*.whl")
    return built


def _venv(root: Path, *pip_args: str) -> Path:
    """A fresh venv in ``root`` with ``pip install PIP_ARGS`` (pinned by constraints.txt)."""
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
          "--disable-pip-version-check", "-c", str(REPO_ROOT / "constraints.txt"), *pip_args],
         cwd=root)
    return venv


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; the dependencies come from this environment."""
    venv = _venv(tmp_path_factory.mktemp("full"), "--no-deps", str(wheel))
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=venv).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


@pytest.fixture(scope="module")
def core(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``pip install rab-certify`` (the wheel, no extra) from the index."""
    return _venv(tmp_path_factory.mktemp("core"), str(wheel))


@pytest.fixture(scope="module")
def cli(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``pip install 'rab-certify[cli]'`` from the index."""
    return _venv(tmp_path_factory.mktemp("cli"), f"{wheel}[cli]")


def test_the_installed_package_is_the_wheel(installed: Path, tmp_path: Path) -> None:
    where = _run([str(installed / "bin" / "python"), "-c",
                  "import rab, contract, app; "
                  "print(rab.__file__, contract.__file__, app.__file__)"],
                 cwd=tmp_path)
    assert all(path.startswith(str(installed)) for path in where.split()), where


def test_wheel_lists_and_runs_a_reproduction_grid(
    installed: Path, tmp_path: Path, shared_data: Path
) -> None:
    rab = str(installed / "bin" / "rab")
    env = {k: v for k, v in CLEAN_ENV.items() if k != "RAB_EXPERIMENTS_DIR"}
    env["RAB_SHARED_DATA"] = str(shared_data)
    names = _run([rab, "experiment", "list"], cwd=tmp_path, env=env).split()
    assert {"table5-spambase", "table5-mnist", "table2-mnist-reduced"} <= set(names)
    out = tmp_path / "out"
    _run([rab, "experiment", "reproduce", "table5-spambase", "--num-test", "3", "--out",
          str(out)], cwd=tmp_path, env=env)
    results = json.loads((out / "results.json").read_text())
    assert len(results["cells"]) == 12
    assert (out / "report.md").is_file()


def test_wheel_ships_the_browser_assets_types_and_license(installed: Path, tmp_path: Path) -> None:
    # /docs, /redoc and the dashboard load these from the package (no CDN)
    where = _run([str(installed / "bin" / "python"), "-c",
                  "import rab, contract; from app.docs import STATIC_DIR; "
                  "from app.dashboard import PAGE; print(STATIC_DIR, PAGE, rab.__file__, "
                  "contract.__file__)"], cwd=tmp_path).split()
    static, page, rab, contract = (Path(w) for w in where)
    assert static.is_relative_to(installed) and page.is_file()
    # PEP 561: the library and the client are typed, with the contract's types it returns
    assert (rab.parent / "py.typed").is_file() and (contract.parent / "py.typed").is_file()
    (license_file,) = (rab.parent.parent).glob("rab_certify-*.dist-info/**/LICENSE")
    assert "Apache License" in license_file.read_text()
    for name in ("swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css",
                 "swagger-ui/LICENSE", "redoc/redoc.standalone.js", "redoc/LICENSE",
                 "dashboard/dashboard.js", "dashboard/dashboard.css", "README.md"):
        assert (static / name).is_file(), name


#: A tiny certification: the same numbers in the core venv as in this environment.
KNN = """
import json, sys
import numpy as np
from rab.bounds import clopper_pearson_lower, gaussian_radius
from rab.knn import certify_knn
rng = np.random.default_rng(0)
X = rng.normal(size=(40, 5)); y = (X[:, 0] > 0).astype(int)
batch = certify_knn(X, y, X[:6] + 0.1, sigma=0.5, k=3, backend="auto")
print(json.dumps({"prediction": batch.prediction.tolist(), "radius": batch.radius.tolist(),
                  "torch": "torch" in sys.modules, "r": gaussian_radius(0.9, 0.1, 0.5).tolist(),
                  "cp": clopper_pearson_lower(90, 100, 0.01).tolist()}))
"""


def _distributions(venv: Path) -> set[str]:
    listed = json.loads(_run([str(venv / "bin" / "python"), "-m", "pip", "list",
                              "--disable-pip-version-check", "--format", "json"], cwd=venv))
    return {d["name"].lower() for d in listed} - {"pip", "setuptools", "wheel"}


def test_core_install_certifies_a_knn_without_torch(core: Path, tmp_path: Path) -> None:
    assert _distributions(core) == {"rab-certify", "numpy", "scipy", "threadpoolctl"}
    got = json.loads(_run([str(core / "bin" / "python"), "-c", KNN], cwd=tmp_path))
    namespace: dict[str, object] = {}
    exec(KNN.replace("print(", "result = ("), namespace)  # the same in this environment
    assert not got.pop("torch")
    here = json.loads(str(namespace["result"]))
    here.pop("torch")
    assert got == here
    size = subprocess.run(["du", "-sm", str(core)], capture_output=True, text=True, check=True)
    assert int(size.stdout.split()[0]) < 400, size.stdout  # MB: numpy and scipy, no torch


def _rab(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "rab"), *args], cwd=cwd, env=CLEAN_ENV,
                          capture_output=True, text=True, timeout=300)


def test_core_rab_script_names_the_cli_extra(core: Path, tmp_path: Path) -> None:
    out = _rab(core, "certify", "digits", "--sigma", "0.5", "--method", "ensemble", cwd=tmp_path)
    assert out.returncode == MISSING_EXTRA, out.stderr
    assert "pip install 'rab-certify[cli]'" in out.stderr and "Traceback" not in out.stderr


def test_cli_install_names_the_torch_extra_for_an_ensemble(cli: Path, tmp_path: Path) -> None:
    assert not {"torch", "fastapi", "celery", "sqlalchemy"} & _distributions(cli)
    out = _rab(cli, "certify", "digits", "--classes", "0,1", "--train-size", "60",
               "--test-size", "10", "--sigma", "0.5", "--method", "ensemble", "--num-models",
               "2", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert out.returncode == MISSING_EXTRA, out.stderr
    assert ("the 'torch' extra is needed for DNN-RAB ensembles and is not installed "
            "(missing: torch, torchvision, opacus): pip install 'rab-certify[torch]'"
            in out.stderr), out.stderr
    assert "Traceback" not in out.stderr
    out = _rab(cli, "serve", cwd=tmp_path)
    assert out.returncode == MISSING_EXTRA and "'rab-certify[service]'" in out.stderr, out.stderr
    # the K-NN needs no torch: the local command runs and writes its table, JSON and plot
    out = _rab(cli, "certify", "digits", "--classes", "0,1", "--train-size", "60",
               "--test-size", "10", "--sigma", "0.5", "--out", str(tmp_path / "knn"),
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "knn" / "certified_accuracy.png").is_file()
