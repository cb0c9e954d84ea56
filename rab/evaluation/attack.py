"""A backdoor attack as a small, validated value (paper section 7.1, REFERENCE section 4).

An :class:`AttackSpec` names the trigger (``kind``, its L2 norm ``norm`` = ||delta||_2 and any
extra trigger options), the poisoning rate r_p, the target class, the seed that draws the poisoned
rows and the mode (``"replace"``: the authors' protocol, or ``"append"``). It is what a
configuration file, the command line and the service hand to :func:`rab.evaluation.prepare`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rab.attacks import Trigger, make_trigger

__all__ = ["ATTACK_KINDS", "NORM_FREE_KINDS", "AttackSpec"]

#: Trigger kinds an attack may name: the authors' three (scaled to ``norm``) and BadNets' patch.
ATTACK_KINDS: tuple[str, ...] = ("one_pixel", "four_pixel", "blending", "badnets_patch")
#: Kinds whose size is not an L2 norm (they take ``options`` instead).
NORM_FREE_KINDS: tuple[str, ...] = ("badnets_patch",)
_MODES = ("replace", "append")


@dataclass(frozen=True)
class AttackSpec:
    """One backdoor attack: trigger, r_p, target, seed, mode. Invalid values raise ValueError.

    Attributes:
        kind: one of :data:`ATTACK_KINDS`.
        norm: ||delta||_2 of the trigger (required and > 0 except for ``badnets_patch``).
        rate: r_p, the fraction of the training set that is poisoned, in (0, 1].
        target: the class the poisoned points are relabelled to (all-to-one).
        seed: seed of the generator that draws the poisoned rows.
        mode: ``"replace"`` (the authors' protocol) or ``"append"``.
        clip: clip triggered inputs to the data set's feature range.
        options: extra trigger options passed to :func:`rab.attacks.make_trigger`
            (e.g. ``position`` / ``positions``, ``legacy`` for blending, ``size`` for a patch).
    """

    kind: str
    norm: float | None = None
    rate: float = 0.02
    target: int = 0
    seed: int = 0
    mode: str = "replace"
    clip: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"unknown attack kind {self.kind!r}; choose from {list(ATTACK_KINDS)}")
        if self.kind in NORM_FREE_KINDS:
            if self.norm is not None:
                raise ValueError(f"a {self.kind} attack takes no norm (size it with options)")
        elif self.norm is None or not (math.isfinite(self.norm) and self.norm > 0):
            raise ValueError(f"a {self.kind} attack needs a trigger norm > 0, got {self.norm}")
        if not (isinstance(self.rate, int | float) and 0.0 < self.rate <= 1.0):
            raise ValueError(f"poisoning rate must lie in (0, 1], got {self.rate}")
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target < 0:
            raise ValueError(f"target must be a non-negative class index, got {self.target!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {self.mode!r}")
        if "norm" in self.options:
            raise ValueError("give the trigger norm as the attack's norm, not as an option")
        object.__setattr__(self, "options", dict(self.options))
        if self.norm is not None:
            object.__setattr__(self, "norm", float(self.norm))
        object.__setattr__(self, "rate", float(self.rate))

    def trigger(self, input_shape: Sequence[int]) -> Trigger:
        """The trigger for inputs of ``input_shape`` (ValueError if it does not fit)."""
        options = dict(self.options)
        if self.norm is not None:
            options["norm"] = self.norm
        return make_trigger(self.kind, input_shape, **options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (inverse of :meth:`from_dict`)."""
        return {
            "kind": self.kind,
            "norm": self.norm,
            "rate": self.rate,
            "target": self.target,
            "seed": self.seed,
            "mode": self.mode,
            "clip": self.clip,
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttackSpec:
        """Build from a mapping with the field names; unknown or missing keys raise ValueError."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown attack keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}"
            )
        if "kind" not in data:
            raise ValueError("an attack needs a 'kind'")
        return cls(**dict(data))

    @property
    def label(self) -> str:
        """Short human-readable description, e.g. ``one_pixel |d|=0.1 r_p=0.02``."""
        size = "" if self.norm is None else f" |d|={self.norm:g}"
        return f"{self.kind}{size} r_p={self.rate:g}"
