"""A backdoor attack as a small, validated value (paper section 7.1, REFERENCE section 4).

An :class:`AttackSpec` names the trigger (``kind``, its L2 norm ``norm`` = ||delta||_2, the
pixel positions of a one-/four-pixel trigger and any extra trigger options), the poisoning rate
r_p, the target class, the seed that draws the poisoned rows and the mode (``"replace"``: the
authors' protocol, or ``"append"``). It is what a configuration file, the command line and the
service hand to :func:`rab.evaluation.prepare`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Literal, get_args

from rab.attacks import Trigger, make_trigger, poison_count
from rab.data import DataFacts
from rab.seeds import fresh_seed, resolve_seed

__all__ = [
    "ATTACK_KINDS",
    "NORM_FREE_KINDS",
    "POISON_MODES",
    "POSITION_COUNTS",
    "AttackKind",
    "AttackSpec",
    "PoisonMode",
]

#: Trigger kinds an attack may name: the authors' three (scaled to ``norm``) and BadNets' patch.
AttackKind = Literal["one_pixel", "four_pixel", "blending", "badnets_patch"]
ATTACK_KINDS: tuple[str, ...] = get_args(AttackKind)
#: How poisoned points enter the training set: replacing the clean ones (the authors'
#: protocol) or appended to them.
PoisonMode = Literal["replace", "append"]
POISON_MODES: tuple[str, ...] = get_args(PoisonMode)
#: Kinds whose size is not an L2 norm (they take ``options`` instead).
NORM_FREE_KINDS: tuple[str, ...] = ("badnets_patch",)
#: Kinds that take explicit ``positions``, and how many positions each takes.
POSITION_COUNTS: dict[str, int] = {"one_pixel": 1, "four_pixel": 4}


@dataclass(frozen=True)
class AttackSpec:
    """One backdoor attack: trigger, r_p, target, seed, mode. Invalid values raise ValueError.

    Attributes:
        kind: one of :data:`ATTACK_KINDS`.
        norm: ||delta||_2 of the trigger (required and > 0 except for ``badnets_patch``).
        rate: r_p, the fraction of the training set that is poisoned, in (0, 1].
        target: the class the poisoned points are relabelled to (all-to-one).
        seed: seed of the generator that draws the poisoned rows (None: a fresh seed is
            drawn and recorded here, :mod:`rab.seeds`).
        mode: ``"replace"`` (the authors' protocol) or ``"append"``.
        clip: clip triggered inputs to the data set's feature range.
        options: extra trigger options passed to :func:`rab.attacks.make_trigger`
            (e.g. ``legacy`` for blending, ``size`` for a patch).
        positions: where a one_pixel (1 position) or four_pixel (4 positions) trigger goes,
            instead of the default positions of the input shape (``rab.attacks``). Each is one
            input's spatial index, ``(feature,)`` for vectors and ``(row, col)`` for images
            ``(C, H, W)`` (every channel); checked against the input shape by :meth:`trigger`.
    """

    kind: str
    norm: float | None = None
    rate: float = 0.02
    target: int = 0
    seed: int = field(default_factory=fresh_seed)
    mode: str = "replace"
    clip: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    positions: Sequence[Sequence[int]] | None = None  # stored as tuples of ints

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
        object.__setattr__(self, "seed", resolve_seed(self.seed, "attack seed"))
        if self.mode not in POISON_MODES:
            raise ValueError(f"mode must be one of {list(POISON_MODES)}, got {self.mode!r}")
        if "norm" in self.options:
            raise ValueError("give the trigger norm as the attack's norm, not as an option")
        object.__setattr__(self, "options", dict(self.options))
        if self.positions is not None:
            object.__setattr__(self, "positions", self._checked_positions(self.positions))
        if self.norm is not None:
            object.__setattr__(self, "norm", float(self.norm))
        object.__setattr__(self, "rate", float(self.rate))

    def _checked_positions(
        self, positions: Iterable[Iterable[Any]]
    ) -> tuple[tuple[int, ...], ...]:
        """``positions`` as tuples of non-negative ints, as many as the kind takes."""
        if self.kind not in POSITION_COUNTS:
            raise ValueError(
                f"a {self.kind} attack takes no positions (only {list(POSITION_COUNTS)} do)"
            )
        if {"position", "positions"} & set(self.options):
            raise ValueError("give trigger positions as the attack's positions, not as options")
        try:
            checked = tuple(tuple(position) for position in positions)
        except TypeError:
            raise ValueError(f"positions must be index tuples, got {positions!r}") from None
        count = POSITION_COUNTS[self.kind]
        if len(checked) != count:
            raise ValueError(
                f"a {self.kind} attack takes exactly {count} position(s), got {len(checked)}"
            )
        for position in checked:
            if not position or any(
                isinstance(i, bool) or not isinstance(i, Integral) or i < 0 for i in position
            ):
                raise ValueError(
                    f"trigger position {position} is not a tuple of non-negative indices"
                )
        return tuple(tuple(int(i) for i in position) for position in checked)

    def check(self, facts: DataFacts) -> None:
        """ValueError unless this attack can poison data of ``facts``: the trigger fits the
        inputs (explicit positions inside them) and the rate poisons at least one and at most
        every non-target training point of a target class that exists
        (:func:`rab.attacks.poison_count`)."""
        poison_count(self.rate, facts.train_counts, self.target)
        self.trigger(facts.input_shape)

    def trigger(self, input_shape: Sequence[int]) -> Trigger:
        """The trigger for inputs of ``input_shape`` (ValueError if it does not fit, e.g. a
        position with the wrong number of indices or outside the input)."""
        options = dict(self.options)
        if self.norm is not None:
            options["norm"] = self.norm
        if self.positions is not None:
            options.update(self._position_options(input_shape, self.positions))
        return make_trigger(self.kind, input_shape, **options)

    def _position_options(
        self, input_shape: Sequence[int], positions: Sequence[Sequence[int]]
    ) -> dict[str, Any]:
        """``make_trigger``'s option for ``positions``, each one index per spatial axis of
        ``input_shape`` (the feature of a vector, every axis after the channels otherwise)."""
        rank = 1 if len(input_shape) == 1 else len(input_shape) - 1
        for position in positions:
            if len(position) != rank:
                raise ValueError(
                    f"trigger position {tuple(position)} has {len(position)} indices; inputs "
                    f"of shape {tuple(input_shape)} take {rank} ([feature] for vectors, "
                    "[row, col] for images (C, H, W))"
                )
        if self.kind == "one_pixel":
            return {"position": positions[0]}
        return {"positions": positions}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (inverse of :meth:`from_dict`); ``positions`` only when given,
        so that the settings (and result keys) of attacks at default positions stay as they
        were."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "norm": self.norm,
            "rate": self.rate,
            "target": self.target,
            "seed": self.seed,
            "mode": self.mode,
            "clip": self.clip,
            "options": dict(self.options),
        }
        if self.positions is not None:
            out["positions"] = [list(position) for position in self.positions]
        return out

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
