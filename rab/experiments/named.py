"""The named reproductions: ``rab/experiments/grids/<name>.toml``, package data of the wheel.

The directory is ``RAB_EXPERIMENTS_DIR`` if set (a folder of one's own grids), else the grids
shipped inside the package, the same from a checkout and from an installed wheel.
"""

from __future__ import annotations

import os
from pathlib import Path

from rab.experiments.config import ExperimentConfig, load_config

__all__ = ["experiments_dir", "named_config", "named_configs"]


def experiments_dir() -> Path:
    env = os.environ.get("RAB_EXPERIMENTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent / "grids"


def named_configs() -> list[str]:
    """Names of the shipped configurations (file stems), sorted."""
    return sorted(p.stem for p in experiments_dir().glob("*.toml"))


def named_config(name: str) -> ExperimentConfig:
    """The shipped configuration ``name`` (ValueError listing the known names if unknown)."""
    path = experiments_dir() / f"{name}.toml"
    if not path.is_file():
        raise ValueError(f"unknown experiment {name!r}; known: {named_configs()}")
    return load_config(path)
