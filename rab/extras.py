"""The package's optional parts: which extra of ``pip install 'rab-certify[EXTRA]'`` provides
which imports, and one check that names the extra to install when one is missing.

``pip install rab-certify`` gives the library core (numpy, scipy, threadpoolctl): the bounds,
the exact smoothed K-NN, radii and confidence bounds, the data types. Everything else is an
extra (their requirements are in ``pyproject.toml``; ``tests/test_extras.py`` checks that the
imports listed here are the ones those requirements provide):

- ``torch``: DNN-RAB ensembles, the torch K-NN backend, the torchvision MNIST / CIFAR-10 files;
- ``sklearn``: seeded train/test splits, scikit-learn's built-in data sets, the vanilla K-NN;
- ``plots``: the certified-accuracy curves (matplotlib);
- ``client``: the HTTP client ``rab.client``;
- ``cli``: the ``rab`` command (with ``client``, ``sklearn`` and ``plots``);
- ``service``: the API and its workers' service code (with ``cli``; the workers add ``torch``).
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtraError", "require"]

_CLIENT = ("httpx", "pydantic")
_CLI = ("typer", "rich", *_CLIENT, "sklearn", "matplotlib")

#: The top-level modules each extra makes importable (its included extras' too).
EXTRAS: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "torchvision", "opacus"),
    "sklearn": ("sklearn",),
    "plots": ("matplotlib",),
    "client": _CLIENT,
    "cli": _CLI,
    "service": (
        *_CLI, "fastapi", "uvicorn", "pydantic_settings", "sqlalchemy", "alembic", "psycopg",
        "asyncpg", "celery", "redis", "python_multipart", "prometheus_client", "boto3",
        "structlog",
    ),
}


class MissingExtraError(ImportError):
    """An optional part of the package is used without the extra that installs it."""

    def __init__(self, extra: str, purpose: str, missing: list[str]) -> None:
        super().__init__(
            f"the '{extra}' extra is needed for {purpose} and is not installed (missing: "
            f"{', '.join(missing)}): pip install 'rab-certify[{extra}]'"
        )
        self.extra = extra


def require(extra: str, purpose: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` unless all its modules can be imported;
    ``purpose`` names what needs them ("DNN-RAB ensembles"). Nothing is imported here."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(extra, purpose, missing)
