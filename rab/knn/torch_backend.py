"""torch float64 backend for the K-NN dynamic programme (CUDA when present, else CPU).

Imported lazily by ``rab.knn.backend.get_backend``: ``import rab.knn`` never imports torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    return bool(torch.cuda.is_available())


class TorchOps:
    """torch float64 arrays on one device (default: CUDA if available, else CPU)."""

    name = "torch"

    def __init__(self, device: str | None = None) -> None:
        self.device = torch.device(device or ("cuda" if cuda_available() else "cpu"))

    def asarray(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)

    def index(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.int64), device=self.device)

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float64, device=self.device)

    def concatenate(self, arrays: list[Any], axis: int) -> torch.Tensor:
        return torch.cat(arrays, dim=axis)

    def flip(self, x: Any, axis: int) -> torch.Tensor:
        return torch.flip(x, dims=(axis,))

    def moveaxis(self, x: Any, source: int, destination: int) -> torch.Tensor:
        return torch.movedim(x, source, destination).contiguous()

    def einsum(self, subscripts: str, *operands: Any) -> torch.Tensor:
        return torch.einsum(subscripts, *operands)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.detach().to("cpu").numpy(), dtype=np.float64)
