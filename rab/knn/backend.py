"""Array backends for the K-NN count dynamic programme: numpy here, torch in ``torch_backend``.

The dynamic programme (``rab.knn.tally``) is written once against the small ``ArrayOps``
interface; arrays themselves are used through the operators numpy and torch share (slicing,
``*``, ``+``, ``reshape``, ``sum``).  ``get_backend("auto")`` picks torch on CUDA when torch is
installed and a GPU is visible, numpy otherwise; torch is imported only then.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from rab.extras import require


class ArrayOps(Protocol):
    """The operations the dynamic programme needs beyond the shared operator syntax."""

    name: str

    def asarray(self, x: np.ndarray) -> Any:
        """A float64 backend array holding x."""

    def index(self, x: np.ndarray) -> Any:
        """An integer index array usable for advanced indexing."""

    def zeros(self, shape: tuple[int, ...]) -> Any:
        """A float64 array of zeros."""

    def concatenate(self, arrays: list[Any], axis: int) -> Any:
        """Join arrays along an existing axis."""

    def flip(self, x: Any, axis: int) -> Any:
        """Reverse the order along one axis."""

    def moveaxis(self, x: Any, source: int, destination: int) -> Any:
        """Move one axis, returning a contiguous array."""

    def einsum(self, subscripts: str, *operands: Any) -> Any:
        """Einstein summation."""

    def to_numpy(self, x: Any) -> np.ndarray:
        """A float64 numpy copy of a backend array."""


class NumpyOps:
    """numpy float64 on the CPU."""

    name = "numpy"

    def asarray(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def index(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.intp)

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape)

    def concatenate(self, arrays: list[Any], axis: int) -> np.ndarray:
        return np.concatenate(arrays, axis=axis)

    def flip(self, x: Any, axis: int) -> np.ndarray:
        return np.flip(x, axis=axis)

    def moveaxis(self, x: Any, source: int, destination: int) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(x, source, destination))

    def einsum(self, subscripts: str, *operands: Any) -> np.ndarray:
        return np.einsum(subscripts, *operands, optimize=True)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)


def get_backend(name: str = "auto") -> ArrayOps:
    """Backend by name: numpy, torch (CUDA if available, else CPU), auto (torch only on CUDA)."""
    if name == "numpy":
        return NumpyOps()
    if name == "torch":
        require("torch", "the torch K-NN backend")
        from rab.knn.torch_backend import TorchOps

        return TorchOps()
    if name == "auto":
        try:
            from rab.knn.torch_backend import TorchOps, cuda_available
        except ImportError:
            return NumpyOps()
        return TorchOps() if cuda_available() else NumpyOps()
    raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', got {name!r}")
