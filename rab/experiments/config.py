"""Experiment configurations (TOML, read by ``tomllib``): a grid of evaluations.

A configuration names data sets, attacks, attack settings (||delta||, r_p), sigmas and one
method; the grid is their product, one *cell* per (data set, attack, setting, sigma).  Layout::

    name = "table5-spambase"
    description = "..."
    radii = [0.05, 0.1, 0.2, 0.5, 1.0]
    sigmas = [1.0, 2.0]
    vanilla = true            # also score the undefended model (Figure 3)
    table = "Table 5"         # optional: the paper's table or figure (reproduction status)
    scale = "..."             # optional: the reduced scale, stated beside every figure
    plots = ["curves"]        # optional: "curves" (Figure 4b), "empirical" (Figure 3 bars)
    # num_test = 200          # optional: first N points of each test set

    [method]                  # rab.evaluation.method_from_dict, without sigma
    name = "knn"
    k = 5
    # or several: [[methods]] tables, each like [method]; a method without smoothing noise
    # (name = "partition") is one cell, not one per sigma


    [[datasets]]              # rab.evaluation.DatasetSpec fields
    source = "spambase"
    variant = "authors"

    [attack]                  # fields shared by every attack (target, seed, mode, ...)
    target = 0

    [[attacks]]               # kind (+ options); kind = "none": no attack (r_p = 0), one cell
    kind = "one_pixel"

    [[settings]]              # one attack setting: norm and rate
    norm = 1.0
    rate = 0.1

    [[reference]]             # published figures to print beside ours (optional)
    dataset = "spambase"; kind = "one_pixel"; norm = 1.0; rate = 0.1; sigma = 1.0
    success_rate = 0.452; clean_accuracy = 0.756; backdoor_accuracy = 0.709
    certified_accuracy = [...]; certified_rate = [...]   # at reference_radii
    # vanilla_clean_accuracy / vanilla_backdoor_accuracy: the undefended model's (Table 3's
    # sigma = 0 rows); a reference without kind matches the cell without attack

A setting may be ``{}`` with no attack at all when ``attacks`` is empty.

A grid file may start from another: ``extends = "table5-mnist"`` (the stem of a grid in the same
folder) loads that grid first (and its own base, if it has one), then the child's top-level keys
replace the base's: a table (``[method]``, ``[attack]``) is merged key by key, an array of
tables (``[[datasets]]``, ``[[attacks]]``, ``[[settings]]``, ``[[reference]]``) or any other
value is replaced whole, and what the child does not give (the references, say) is inherited
(:func:`merge_grid`).  An unknown base or a cycle is a ValueError.  ``extends`` is resolved by
:func:`load_config`; the parsed ``raw`` mapping is the merged grid.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rab.evaluation import AttackSpec, DatasetSpec, EvaluationRequest, Method
from rab.evaluation.methods import UNSMOOTHED_METHODS

__all__ = ["NO_ATTACK", "PLOTS", "Cell", "ExperimentConfig", "Reference", "load_config",
           "merge_grid", "parse_config"]

#: The ``[[attacks]]`` kind of the cell without any attack (r_p = 0, Table 3's benign rows).
NO_ATTACK = "none"
#: Plot kinds a grid may ask for (``rab.experiments.report``).
PLOTS: tuple[str, ...] = ("curves", "empirical")

_TOP_KEYS = {
    "name", "description", "radii", "sigmas", "vanilla", "num_test", "method", "methods",
    "datasets",
    "attack", "attacks", "settings", "reference", "reference_radii", "reference_source", "notes",
    "table", "scale", "plots",
}
_MATCH_KEYS = {"dataset", "kind", "norm", "rate", "sigma"}
_FIGURE_KEYS = {"success_rate", "clean_accuracy", "backdoor_accuracy", "certified_accuracy",
                "certified_rate", "vanilla_clean_accuracy", "vanilla_backdoor_accuracy"}


@dataclass(frozen=True)
class Cell:
    """One evaluation of the grid; ``key`` (a hash of its settings) names its result file."""

    dataset: DatasetSpec
    attack: AttackSpec | None
    method: Method
    radii: tuple[float, ...]
    num_test: int | None
    vanilla: bool

    def settings(self) -> dict[str, Any]:
        """Everything that determines the result, JSON-ready."""
        return {
            "dataset": self.dataset.to_dict(),
            "attack": None if self.attack is None else self.attack.to_dict(),
            "method": self.method.to_dict(),
            "radii": list(self.radii),
            "num_test": self.num_test,
            "vanilla": self.vanilla,
        }

    @property
    def key(self) -> str:
        """SHA-256 (first 16 hex digits) of the canonical JSON of :meth:`settings`."""
        text = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        attack = "no attack" if self.attack is None else self.attack.label
        return (f"{self.dataset.label} | {attack} | {self.method.name} "
                f"sigma={self.method.sigma:g}")


@dataclass(frozen=True)
class Reference:
    """Published figures of one cell (matched on dataset label, kind, norm, rate, sigma)."""

    dataset: str
    kind: str | None
    norm: float | None
    rate: float | None
    sigma: float
    values: Mapping[str, Any]

    def matches(self, cell: Cell) -> bool:
        a = cell.attack
        same_attack = (
            (a is None and self.kind is None)
            or (a is not None and a.kind == self.kind and a.norm == self.norm
                and a.rate == self.rate)
        )
        return self.dataset == cell.dataset.label and same_attack and self.sigma == \
            cell.method.sigma


@dataclass(frozen=True)
class ExperimentConfig:
    """A parsed configuration (see the module docstring)."""

    name: str
    description: str
    cells: tuple[Cell, ...]
    references: tuple[Reference, ...]
    reference_radii: tuple[float, ...]
    reference_source: str
    notes: str
    raw: Mapping[str, Any] = field(repr=False)
    table: str = ""
    scale: str = ""
    plots: tuple[str, ...] = ("curves",)

    def reference_for(self, cell: Cell) -> Reference | None:
        return next((r for r in self.references if r.matches(cell)), None)


def _floats(value: Any, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{what} must be a non-empty list of numbers")
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a list of numbers, got {value!r}") from None


def _reference(entry: Mapping[str, Any]) -> Reference:
    unknown = set(entry) - _MATCH_KEYS - _FIGURE_KEYS
    if unknown:
        raise ValueError(f"unknown reference keys {sorted(unknown)}; figures: "
                         f"{sorted(_FIGURE_KEYS)}")
    if "dataset" not in entry or "sigma" not in entry:
        raise ValueError("a [[reference]] entry needs dataset and sigma")
    return Reference(entry["dataset"], entry.get("kind"), entry.get("norm"), entry.get("rate"),
                     float(entry["sigma"]), {k: v for k, v in entry.items() if k in _FIGURE_KEYS})


def _methods(data: Mapping[str, Any], sigmas: tuple[float, ...]) -> list[dict[str, Any]]:
    """The method tables of ``[method]`` or ``[[methods]]``, each smoothed one once per sigma."""
    if ("method" in data) == ("methods" in data):
        raise ValueError("give either one [method] or a list of [[methods]]")
    tables = [data["method"]] if "method" in data else list(data["methods"] or [])
    out = []
    for table in tables:
        method = dict(table or {})
        if "sigma" in method:
            raise ValueError("give sigma in 'sigmas', not in [method]")
        if method.get("name") in ("ensemble", "partition") and "seed" not in method:
            raise ValueError(f"a grid is a reproduction: give the {method['name']}'s training "
                             "seed in [method]")
        if method.get("name") in UNSMOOTHED_METHODS:
            out.append(method)
        else:
            out.extend({**method, "sigma": s} for s in sigmas)
    return out


def parse_config(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a configuration mapping and expand its grid (ValueError naming the problem)."""
    if "extends" in data:
        raise ValueError("'extends' is resolved when a grid file is read: use load_config")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ValueError(f"unknown configuration keys {sorted(unknown)}")
    if not isinstance(data.get("name"), str):
        raise ValueError("the configuration needs a name")
    sigmas = _floats(data.get("sigmas"), "sigmas")
    radii = _floats(data.get("radii", [0.0, 0.05, 0.1, 0.2, 0.5, 1.0]), "radii")
    methods = _methods(data, sigmas)
    datasets = [DatasetSpec.from_dict(d) for d in data.get("datasets") or []]
    if not datasets:
        raise ValueError("the configuration needs at least one [[datasets]] entry")
    shared = dict(data.get("attack") or {})
    attacks: list[dict[str, Any] | None] = []
    for kind in data.get("attacks") or []:
        if kind.get("kind") == NO_ATTACK:
            if set(kind) != {"kind"}:
                raise ValueError(f'kind = "{NO_ATTACK}" (no attack) takes no other keys')
            attacks.append(None)
            continue
        for setting in data.get("settings") or [{}]:
            values = {**shared, **kind, **setting}
            if "seed" not in values:
                raise ValueError("a grid is a reproduction: give each attack's seed (the seed "
                                 "drawing the poisoned rows) in [attack] or [[attacks]]")
            attacks.append(values)
    num_test = data.get("num_test")
    vanilla = bool(data.get("vanilla", True))
    requests = [  # the library's one mapping of an evaluation (rab.evaluation.request)
        EvaluationRequest.from_dict({"method": m, "attack": a, "num_test": num_test})
        for a in (attacks or [None]) for m in methods
    ]
    cells = tuple(
        Cell(d, r.attack, r.method, radii, r.num_test, vanilla) for d in datasets for r in requests
    )
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise ValueError("the grid has duplicate cells (repeated dataset, attack or sigma)")
    references = tuple(_reference(r) for r in data.get("reference") or [])
    plots = tuple(data.get("plots", ["curves"]))
    if not set(plots) <= set(PLOTS):
        raise ValueError(f"unknown plots {sorted(set(plots) - set(PLOTS))}; known: {list(PLOTS)}")
    return ExperimentConfig(
        name=data["name"], description=str(data.get("description", "")), cells=cells,
        references=references,
        reference_radii=tuple(float(r) for r in data.get("reference_radii", [])),
        reference_source=str(data.get("reference_source", "")),
        notes=str(data.get("notes", "")), raw=dict(data),
        table=str(data.get("table", "")), scale=str(data.get("scale", "")), plots=plots,
    )


def _read_toml(p: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p} is not valid TOML: {exc}") from exc


def merge_grid(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: the child's top-level keys replace the base's.

    A table (``[method]``, ``[attack]``) is merged key by key, the child's keys winning; any other
    value, arrays of tables (``[[datasets]]``, ``[[reference]]``, ...) included, is replaced
    whole.  Keys the child does not give (the references, say) are inherited.
    """
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            out[key] = {**base[key], **value}
        else:
            out[key] = value
    return out


def _resolve_extends(p: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The TOML of ``p`` with its ``extends`` chain merged in (bases are siblings of ``p``)."""
    if p in seen:
        chain = " -> ".join(q.stem for q in (*seen, p))
        raise ValueError(f"'extends' cycle: {chain}")
    data = _read_toml(p)
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str) or not base_name:
        raise ValueError(f"{p}: 'extends' must name a grid, got {base_name!r}")
    base = p.parent / f"{base_name}.toml"
    if not base.is_file():
        known = sorted(q.stem for q in p.parent.glob("*.toml"))
        raise ValueError(f"{p.stem} extends unknown grid {base_name!r}; known: {known}")
    return merge_grid(_resolve_extends(base.resolve(), (*seen, p)), data)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and parse a TOML configuration file, merging the grid it ``extends`` (if any)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"experiment configuration not found: {p}")
    return parse_config(_resolve_extends(p.resolve()))
