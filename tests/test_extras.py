"""The optional parts of the package: the core imports none of them, ``rab.extras`` names the
imports that ``pyproject.toml``'s extras provide, and the ``rab`` script names a missing extra.
(A fresh environment without any extra: ``tests/test_wheel.py``.)"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rab.cli import MISSING_EXTRA
from rab.extras import EXTRAS, MissingExtraError, require

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]

#: What ``pip install rab-certify`` alone can import.
CORE_MODULES = ["rab", "rab.bounds", "rab.knn", "rab.radius", "rab.confidence", "rab.data",
                "rab.metrics", "rab.seeds", "rab.uniform", "rab.attacks", "rab.evaluation",
                "rab.ensemble", "rab.plots", "rab.extras"]
OPTIONAL = sorted({name for names in EXTRAS.values() for name in names})


def _requirements_script():  # docker/requirements.py: the one expansion of the extras
    spec = importlib.util.spec_from_file_location("requirements",
                                                  REPO_ROOT / "docker" / "requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _distribution(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def test_the_core_imports_no_optional_library() -> None:
    code = (f"import sys, {', '.join(CORE_MODULES)}; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({OPTIONAL!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_core_requirements_are_numpy_scipy_threadpoolctl() -> None:
    assert [_distribution(r) for r in PROJECT["dependencies"]] == [
        "numpy", "scipy", "threadpoolctl"]


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_each_extra_provides_exactly_its_listed_imports(extra: str) -> None:
    # the distributions that pyproject's extra installs (included extras expanded) against the
    # top-level modules rab.extras checks, through this environment's installed metadata
    wanted = {_distribution(r)
              for r in _requirements_script().requirements(PROJECT, [extra], core=False)}
    provided: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            provided.setdefault(_distribution(dist), set()).add(module)
    listed = set(EXTRAS[extra])
    for dist in wanted:
        assert provided.get(dist, set()) & listed, f"{extra}: {dist} provides none of {listed}"
    assert listed <= set().union(*(provided.get(d, set()) for d in wanted)), listed


def test_all_is_every_extra_but_dev() -> None:
    script = _requirements_script()
    everything = set(script.requirements(PROJECT, sorted(EXTRAS)))
    assert set(script.requirements(PROJECT, ["all"])) == everything
    assert set(PROJECT["optional-dependencies"]) == {*EXTRAS, "all", "dev"}


def test_require_names_the_extra_and_the_missing_modules() -> None:
    require("torch", "DNN-RAB ensembles")  # installed here
    code = ("import sys; sys.modules['opacus'] = None\n"
            "from rab.extras import require\nrequire('torch', 'DNN-RAB ensembles')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert ("MissingExtraError: the 'torch' extra is needed for DNN-RAB ensembles and is not "
            "installed (missing: opacus): pip install 'rab-certify[torch]'") in out.stderr
    assert issubclass(MissingExtraError, ImportError)  # rab.knn's backend="auto" falls back


@pytest.mark.parametrize(("blocked", "args", "extra"), [
    ("typer", ["certify", "digits", "--sigma", "0.5"], "cli"),
    ("fastapi", ["serve"], "service"),
    ("fastapi", ["keys", "list"], "service"),
])
def test_the_rab_script_names_the_missing_extra(blocked: str, args: list[str], extra: str) -> None:
    code = (f"import sys; sys.modules[{blocked!r}] = None; sys.argv = ['rab', *{args!r}]\n"
            "from rab.cli import main\nmain()")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == MISSING_EXTRA, out.stderr
    assert out.stderr.startswith("error: the '")
    assert f"pip install 'rab-certify[{extra}]'" in out.stderr and "Traceback" not in out.stderr
