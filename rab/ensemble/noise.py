"""Seeded smoothing noise for DNN-RAB (paper section 6.1, Algorithm 1 lines 2 and 5).

Two kinds of noise, both drawn on the CPU with numpy so they are identical whatever device
trains or evaluates the models:

- training noise d_k: one fixed N(0, sigma^2) draw per training point for model k, from a
  generator seeded by ``(job seed, k)`` (Algorithm 1 line 2), so any model can be re-trained alone;
- test-time noise u_k ~ N(0, sigma^2 1_d): one vector of the input's shape per model, from a
  dedicated generator seeded by the SHA-256 digest of the saved model bytes (line 5, "model-
  deterministic test-time augmentation"). The authors' code seeded numpy but drew from torch, so
  their u_k was not a function of the hash; here it is, and the seed is recorded with the model.

Every other random choice of model k's training (initialisation, batch order, DP-SGD sampling
and noise) takes its seed from the same ``(job seed, k)`` seed sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NOISE, _INIT, _SHUFFLE, _DP = range(4)


@dataclass(frozen=True)
class MemberSeeds:
    """Independent seeds of model k, spawned from ``SeedSequence([job_seed, k])``."""

    job_seed: int
    index: int
    noise: np.random.SeedSequence   # training noise d_k (numpy PCG64)
    init: int                       # torch seed for the initial weights
    shuffle: int                    # torch seed for the batch order (DP-SGD: Poisson sampling)
    dp: int                         # torch seed for the DP-SGD gradient noise


def member_seeds(job_seed: int, index: int) -> MemberSeeds:
    """Seeds of model ``index`` of the job seeded by ``job_seed`` (both non-negative ints)."""
    if job_seed < 0 or index < 0:
        raise ValueError(f"job seed and model index must be >= 0, got {job_seed}, {index}")
    children = np.random.SeedSequence([job_seed, index]).spawn(4)

    def torch_seed(child: np.random.SeedSequence) -> int:
        return int(child.generate_state(1, dtype=np.uint64)[0])

    return MemberSeeds(
        job_seed=job_seed,
        index=index,
        noise=children[_NOISE],
        init=torch_seed(children[_INIT]),
        shuffle=torch_seed(children[_SHUFFLE]),
        dp=torch_seed(children[_DP]),
    )


def gaussian(
    seed: int | np.random.SeedSequence, shape: tuple[int, ...], sigma: float
) -> np.ndarray:
    """``sigma * Z`` with Z a float32 standard-normal array of ``shape`` from PCG64(``seed``)."""
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    z = np.random.Generator(np.random.PCG64(seed)).standard_normal(shape, dtype=np.float32)
    z *= np.float32(sigma)
    return z


def training_noise(seeds: MemberSeeds, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """d_k: one N(0, sigma^2) draw per training point, shape ``(n, *input_shape)`` float32."""
    return gaussian(seeds.noise, shape, sigma)


def noise_seed_from_digest(digest: bytes | str) -> int:
    """Test-noise seed of a model: the first 8 bytes of its SHA-256 digest, little-endian."""
    raw = bytes.fromhex(digest) if isinstance(digest, str) else digest
    if len(raw) != 32:
        raise ValueError(f"expected a 32-byte SHA-256 digest, got {len(raw)} bytes")
    return int.from_bytes(raw[:8], "little")


def inference_noise(noise_seed: int, input_shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """u_k ~ N(0, sigma^2 1_d) of the input's shape, a function of the model hash only."""
    return gaussian(noise_seed, tuple(input_shape), sigma)
