"""Backdoor triggers: the authors' three (REFERENCE section 4) and those of other toolkits.

A trigger maps a batch of clean inputs ``X`` (``(n, *input_shape)``, preprocessed features) to
triggered inputs. :func:`apply_trigger` then clips to the data set's feature range and returns the
*actual* per-sample patterns ``delta_i = x_i' - x_i`` and their L2 norms: clipping can only shrink a
pattern, and eq. 14 bounds ``sqrt(sum_i ||delta_i||^2)`` of what really reached the training set.

The authors' triggers are additive and scaled to a requested L2 norm ``delta``:

* one-pixel: ``delta`` on one pixel (spread as ``delta/sqrt(3)`` over 3 channels, one feature for
  Spambase); four-pixel: ``delta/sqrt(4 * channels)`` on each of four pixels x channels;
* blending: a fixed standard-normal pattern of the input's shape, scaled to norm ``delta`` and
  *added* (not an alpha-blend). The authors drew it with ``np.random.seed(0); np.random.randn``;
  here it comes from ``np.random.default_rng(0).standard_normal`` (``legacy=True`` reproduces the
  authors' legacy-generator draw).

Default positions (row, col), images channel-first, every channel (from the authors'
``attack_lib.py``):

=================  ==============  ===========================================
input shape        one-pixel       four-pixel
=================  ==============  ===========================================
(1, 28, 28)        (23, 23)        (18, 20), (19, 19), (20, 18), (20, 20)
(3, 32, 32)        (15, 15)        (14, 16), (15, 15), (16, 14), (16, 16)
(3, 224, 224)      (112, 112)      (112, 112), (111, 113), (113, 111), (113, 113)
(57,) and (56,)    feature 25      features 25, 26, 27, 50
=================  ==============  ===========================================

Other shapes need explicit positions. The authors clipped pixel triggers at 1 and did not clip the
blending pattern; :func:`apply_trigger` clips every trigger to the feature range unless
``clip=False``.

Triggers of other toolkits: a BadNets-style square patch (Gu et al.), an alpha-blended image
(Chen et al., "Blended"), and any user-supplied additive pattern.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "AdditiveTrigger",
    "BlendTrigger",
    "PatchTrigger",
    "Trigger",
    "TriggerResult",
    "additive",
    "apply_trigger",
    "badnets_patch",
    "blended_image",
    "blending",
    "default_positions",
    "four_pixel",
    "make_trigger",
    "one_pixel",
]

_Position = tuple[int, ...]
_SPAM_ONE: list[_Position] = [(25,)]
_SPAM_FOUR: list[_Position] = [(25,), (26,), (27,), (50,)]
_DEFAULT_POSITIONS: dict[str, dict[tuple[int, ...], list[_Position]]] = {
    "one_pixel": {
        (1, 28, 28): [(23, 23)],
        (3, 32, 32): [(15, 15)],
        (3, 224, 224): [(112, 112)],
        (57,): _SPAM_ONE,
        (56,): _SPAM_ONE,
    },
    "four_pixel": {
        (1, 28, 28): [(18, 20), (19, 19), (20, 18), (20, 20)],
        (3, 32, 32): [(14, 16), (15, 15), (16, 14), (16, 16)],
        (3, 224, 224): [(112, 112), (111, 113), (113, 111), (113, 113)],
        (57,): _SPAM_FOUR,
        (56,): _SPAM_FOUR,
    },
}


def _shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {shape}")
    return shape


def _norm(norm: float) -> float:
    value = float(norm)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"trigger L2 norm must be positive and finite, got {norm}")
    return value


def _readonly(a: np.ndarray) -> np.ndarray:
    out = np.array(a, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float64).tobytes()).hexdigest()


class Trigger(ABC):
    """A backdoor trigger for inputs of one shape; see :func:`apply_trigger`."""

    name: str
    input_shape: tuple[int, ...]
    requested_norm: float | None

    @abstractmethod
    def perturb(self, X: np.ndarray) -> np.ndarray:
        """Triggered copy of ``X`` (``float64``, ``(n, *input_shape)``), before clipping."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (recorded with every poisoning)."""


@dataclass(frozen=True, eq=False)
class AdditiveTrigger(Trigger):
    """``x + pattern``; ``requested_norm`` is ``||pattern||_2`` when it was scaled to one."""

    name: str
    pattern: np.ndarray
    requested_norm: float | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", _readonly(self.pattern))

    @property
    def input_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(self.pattern.shape)

    def perturb(self, X: np.ndarray) -> np.ndarray:
        return X + self.pattern

    def describe(self) -> dict[str, Any]:
        support = np.argwhere(self.pattern != 0)
        out: dict[str, Any] = {
            "kind": self.name,
            "input_shape": list(self.input_shape),
            "requested_norm": self.requested_norm,
            "pattern_norm": float(np.linalg.norm(self.pattern)),
            "pattern_sha256": _digest(self.pattern),
        }
        if len(support) <= 12:
            out["support"] = support.tolist()
        return out


@dataclass(frozen=True, eq=False)
class PatchTrigger(Trigger):
    """BadNets-style square: ``x[:, top:top+size, left:left+size] = value`` on every channel."""

    input_shape: tuple[int, ...]
    top: int
    left: int
    size: int
    value: float
    name: str = "badnets_patch"
    requested_norm: float | None = None

    def perturb(self, X: np.ndarray) -> np.ndarray:
        out = np.array(X, dtype=np.float64, copy=True)
        out[..., self.top : self.top + self.size, self.left : self.left + self.size] = self.value
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "input_shape": list(self.input_shape),
            "top": self.top,
            "left": self.left,
            "size": self.size,
            "value": self.value,
        }


@dataclass(frozen=True, eq=False)
class BlendTrigger(Trigger):
    """Chen et al.'s blended trigger: ``(1 - alpha) * x + alpha * image``."""

    image: np.ndarray
    alpha: float
    name: str = "blended_image"
    requested_norm: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < float(self.alpha) <= 1.0:
            raise ValueError(f"blend alpha must lie in (0, 1], got {self.alpha}")
        if not np.isfinite(self.image).all():
            raise ValueError("blend image contains NaN or inf")
        object.__setattr__(self, "image", _readonly(self.image))

    @property
    def input_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(self.image.shape)

    def perturb(self, X: np.ndarray) -> np.ndarray:
        return (1.0 - self.alpha) * X + self.alpha * self.image

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "input_shape": list(self.input_shape),
            "alpha": self.alpha,
            "image_sha256": _digest(self.image),
        }


@dataclass(frozen=True)
class TriggerResult:
    """Triggered inputs with the patterns that were actually added.

    ``X``: ``float32`` triggered inputs, clipped to the feature range. ``patterns``: ``float32``
    ``X - X_clean`` per sample. ``effective_norms``: ``||x_i' - x_i||_2`` computed in ``float64``
    from the stored values (the requested norm for additive triggers up to float32 rounding,
    less where clipped).
    """

    X: np.ndarray
    patterns: np.ndarray
    effective_norms: np.ndarray


def apply_trigger(
    trigger: Trigger,
    X: npt.ArrayLike,
    feature_range: tuple[float, float] | None,
    *,
    clip: bool = True,
) -> TriggerResult:
    """Add ``trigger`` to every sample of ``X``, clip to ``feature_range``, measure the result."""
    clean = np.asarray(X, dtype=np.float32)
    if clean.ndim != 1 + len(trigger.input_shape) or clean.shape[1:] != trigger.input_shape:
        raise ValueError(
            f"trigger {trigger.name!r} is for inputs of shape {trigger.input_shape}, "
            f"got a batch of shape {clean.shape}"
        )
    out = trigger.perturb(clean.astype(np.float64))
    if clip and feature_range is not None:
        out = np.clip(out, feature_range[0], feature_range[1])
    triggered = out.astype(np.float32)
    diff = triggered.astype(np.float64) - clean.astype(np.float64)
    norms = np.sqrt(np.sum(diff.reshape(len(diff), -1) ** 2, axis=1))
    return TriggerResult(X=triggered, patterns=diff.astype(np.float32), effective_norms=norms)


def default_positions(kind: str, input_shape: Sequence[int]) -> list[_Position]:
    """The authors' positions for ``kind`` ("one_pixel"/"four_pixel") and ``input_shape``."""
    shape = _shape(input_shape)
    table = _DEFAULT_POSITIONS[kind]
    if shape not in table:
        raise ValueError(
            f"no default {kind} position for input shape {shape} (defined for "
            f"{sorted(table)}); pass positions explicitly"
        )
    return table[shape]


def pixel_pattern(
    input_shape: Sequence[int], positions: Sequence[Sequence[int]], norm: float
) -> np.ndarray:
    """Equal weights on ``positions`` (all channels of a pixel), scaled to L2 norm ``norm``.

    A position indexes the trailing axes (``(row, col)`` for ``(C, H, W)``, ``(i,)`` for flat
    features); every leading axis (the channels) is covered, so each of the ``k`` entries gets
    ``norm / sqrt(k)``.
    """
    shape, value = _shape(input_shape), _norm(norm)
    pos = [tuple(int(p) for p in position) for position in positions]
    if not pos:
        raise ValueError("need at least one trigger position")
    if len(set(pos)) != len(pos):
        raise ValueError(f"trigger positions repeat: {pos}")
    pattern = np.zeros(shape, dtype=np.float64)
    for p in pos:
        lead = len(shape) - len(p)
        if lead < 0 or any(not 0 <= i < n for i, n in zip(p, shape[lead:], strict=True)):
            raise ValueError(f"trigger position {p} is outside input shape {shape}")
        pattern[(slice(None),) * lead + p] = 1.0
    return pattern * (value / np.linalg.norm(pattern))


def one_pixel(
    input_shape: Sequence[int], norm: float, position: Sequence[int] | None = None
) -> AdditiveTrigger:
    """The authors' one-pixel trigger with L2 norm ``norm`` (default position by shape)."""
    positions = default_positions("one_pixel", input_shape) if position is None else [position]
    return AdditiveTrigger("one_pixel", pixel_pattern(input_shape, positions, norm), float(norm))


def four_pixel(
    input_shape: Sequence[int], norm: float, positions: Sequence[Sequence[int]] | None = None
) -> AdditiveTrigger:
    """The authors' four-pixel trigger with L2 norm ``norm`` (default positions by shape)."""
    chosen = default_positions("four_pixel", input_shape) if positions is None else positions
    return AdditiveTrigger("four_pixel", pixel_pattern(input_shape, chosen, norm), float(norm))


def blending(
    input_shape: Sequence[int], norm: float, *, seed: int = 0, legacy: bool = False
) -> AdditiveTrigger:
    """The authors' blending trigger: a fixed standard-normal pattern scaled to L2 norm ``norm``.

    Drawn by ``np.random.default_rng(seed).standard_normal(input_shape)``; ``legacy=True`` draws
    ``np.random.RandomState(seed).standard_normal`` instead, the stream of the authors'
    ``np.random.seed(0); np.random.randn(...)``.
    """
    shape, value = _shape(input_shape), _norm(norm)
    gen = np.random.RandomState(seed) if legacy else np.random.default_rng(seed)
    noise = gen.standard_normal(shape)
    return AdditiveTrigger("blending", noise * (value / np.linalg.norm(noise)), value)


def additive(
    pattern: npt.ArrayLike, norm: float | None = None, name: str = "additive"
) -> AdditiveTrigger:
    """Any user-supplied additive pattern (one sample's shape), optionally rescaled to ``norm``."""
    arr = np.asarray(pattern, dtype=np.float64)
    if arr.ndim == 0 or not np.isfinite(arr).all():
        raise ValueError("an additive pattern must be a finite array of one input's shape")
    length = float(np.linalg.norm(arr))
    if length == 0:
        raise ValueError("an additive pattern must not be all zeros")
    if norm is None:
        return AdditiveTrigger(name, arr, None)
    return AdditiveTrigger(name, arr * (_norm(norm) / length), float(norm))


def badnets_patch(
    input_shape: Sequence[int],
    *,
    size: int = 3,
    position: Sequence[int] | None = None,
    value: float = 1.0,
) -> PatchTrigger:
    """A BadNets-style ``size`` x ``size`` square set to ``value`` on every channel.

    ``position`` is its top-left ``(row, col)``; by default the bottom-right corner, one pixel in.
    """
    shape = _shape(input_shape)
    if len(shape) != 3:
        raise ValueError(f"a patch trigger needs image inputs (C, H, W), got {shape}")
    _, height, width = shape
    if position is None:
        position = (height - size - 1, width - size - 1)
    top, left = (int(p) for p in position)
    if size <= 0 or top < 0 or left < 0 or top + size > height or left + size > width:
        raise ValueError(
            f"a {size}x{size} patch at ({top}, {left}) does not fit an image of {height}x{width}"
        )
    return PatchTrigger(shape, top, left, int(size), float(value))


def blended_image(image: npt.ArrayLike, alpha: float = 0.2) -> BlendTrigger:
    """Chen et al.'s alpha-blend of a fixed ``image`` (one input's shape, feature space)."""
    return BlendTrigger(np.asarray(image, dtype=np.float64), float(alpha))


def make_trigger(kind: str, input_shape: Sequence[int], **options: Any) -> Trigger:
    """Build a trigger by name (for configuration files and the service).

    ``kind`` and its options: ``"one_pixel"`` / ``"four_pixel"`` (``norm``, optional
    ``position`` / ``positions``), ``"blending"`` (``norm``, ``seed``, ``legacy``),
    ``"badnets_patch"`` (``size``, ``position``, ``value``), ``"blended_image"`` (``image``,
    ``alpha``), ``"additive"`` (``pattern``, ``norm``). Unknown kinds or options, a missing
    required option, or a shape mismatch raise ``ValueError``.
    """
    shape = _shape(input_shape)
    builders: dict[str, Any] = {
        "one_pixel": lambda: one_pixel(shape, **options),
        "four_pixel": lambda: four_pixel(shape, **options),
        "blending": lambda: blending(shape, **options),
        "badnets_patch": lambda: badnets_patch(shape, **options),
        "blended_image": lambda: blended_image(**options),
        "additive": lambda: additive(**options),
    }
    if kind not in builders:
        raise ValueError(f"unknown trigger kind {kind!r}; choose from {sorted(builders)}")
    try:
        trigger: Trigger = builders[kind]()
    except TypeError as exc:
        raise ValueError(f"bad options {sorted(options)} for a {kind} trigger: {exc}") from exc
    if trigger.input_shape != shape:
        raise ValueError(f"{kind} trigger has shape {trigger.input_shape}, inputs have {shape}")
    return trigger
