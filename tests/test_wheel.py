"""The wheel built from the repository works on its own: installed into a fresh virtual
environment (its dependencies from this one's site-packages, the checkout nowhere on the path),
it lists the shipped reproduction grids and runs one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{args}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; the dependencies come from this environment."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"  # the checkout's files (a build in place would leave build/ behind)
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                  cwd=REPO_ROOT).splitlines()
    for name in listed:
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
          str(root), str(source)], cwd=root)
    (wheel,) = root.glob("rab_certify-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], cwd=root)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=root).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


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
    env = {k: v for k, v in os.environ.items() if k != "RAB_EXPERIMENTS_DIR"}
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
                  "import rab; from app.docs import STATIC_DIR; from app.dashboard import PAGE; "
                  "print(STATIC_DIR, PAGE, rab.__file__)"], cwd=tmp_path).split()
    static, page, rab = (Path(w) for w in where)
    assert static.is_relative_to(installed) and page.is_file()
    assert (rab.parent / "py.typed").is_file()  # PEP 561: the library and client are typed
    (license_file,) = (rab.parent.parent).glob("rab_certify-*.dist-info/**/LICENSE")
    assert "Apache License" in license_file.read_text()
    for name in ("swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css",
                 "swagger-ui/LICENSE", "redoc/redoc.standalone.js", "redoc/LICENSE",
                 "dashboard/dashboard.js", "dashboard/dashboard.css", "README.md"):
        assert (static / name).is_file(), name
