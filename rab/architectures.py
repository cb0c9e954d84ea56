"""The base classifiers' names and which inputs each accepts (torch-free, one home).

``rab.nets`` builds the networks; ``rab.ensemble.config`` and the service validate a requested
architecture against the input shape with :func:`check_input_shape` before anything is trained,
so a job that could never train is refused up front.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

__all__ = [
    "ARCHITECTURES",
    "MNIST_CNN_MIN_SIDE",
    "NORMALISED_ARCHITECTURES",
    "Architecture",
    "check_input_shape",
]

Architecture = Literal["mnist_cnn", "preact_resnet", "mlp", "resnet18"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
#: Architectures with normalisation layers (BatchNorm or GroupNorm, chosen by ``norm``).
NORMALISED_ARCHITECTURES: tuple[str, ...] = ("preact_resnet", "resnet18")
#: The MNIST CNN's two conv5x5 + maxpool2 stages need sides of at least this many pixels.
MNIST_CNN_MIN_SIDE = 16


def check_input_shape(arch: str, input_shape: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``arch`` can classify inputs of ``input_shape``.

    The MLP takes any shape (it flattens); the convolutional networks need images (C, H, W),
    the MNIST CNN with H, W >= :data:`MNIST_CNN_MIN_SIDE`.
    """
    shape = tuple(int(s) for s in input_shape)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {list(ARCHITECTURES)}")
    if arch == "mlp":
        return
    if len(shape) != 3:
        raise ValueError(f"{arch} needs image inputs (C, H, W), got inputs of shape {shape}")
    if arch == "mnist_cnn" and min(shape[1:]) < MNIST_CNN_MIN_SIDE:
        raise ValueError(
            f"mnist_cnn needs images of at least {MNIST_CNN_MIN_SIDE}x{MNIST_CNN_MIN_SIDE} "
            f"pixels, got {shape}"
        )
