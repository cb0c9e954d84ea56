"""Print the requirements of the core and of some extras of rab-certify, one a line, from
``pyproject.toml`` alone (the package's own extras, ``rab-certify[cli]``, expanded).

The Dockerfile installs them in a layer of its own before it copies the source, so that a change
to the code reuses the installed dependencies:

    python requirements.py service torch > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def requirements(project: dict[str, Any], extras: Iterable[str], *, core: bool = True) -> list[str]:
    """The requirements of ``extras`` (and of the core unless ``core`` is false), in order,
    each once. Raises ``KeyError`` for an unknown extra."""
    own = re.compile(rf"{re.escape(project['name'])}\[([^\]]+)\]")
    optional = project["optional-dependencies"]
    out = list(project["dependencies"]) if core else []
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in optional[extra]:
            included = own.fullmatch(requirement)
            if included:
                todo.extend(name.strip() for name in included.group(1).split(","))
            else:
                out.append(requirement)
    return list(dict.fromkeys(out))


def main(argv: list[str]) -> None:
    """``requirements.py EXTRA...`` in the directory of ``pyproject.toml``."""
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    try:
        print("\n".join(requirements(project, argv)))
    except KeyError as exc:
        raise SystemExit(f"unknown extra {exc}; pyproject.toml defines "
                         f"{sorted(project['optional-dependencies'])}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
