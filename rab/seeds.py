"""Seeds: their range, and a fresh one for every draw the user gave no seed for.

Every random draw of the library comes from a generator seeded explicitly. A seed the user
did not give is drawn here from the operating system's entropy (never a fixed default) and
recorded with what it produced (``AttackSpec.seed``, ``EnsembleMethod.seed``, job rows), so
that the run can be repeated bit for bit.
"""

from __future__ import annotations

import secrets
from numbers import Integral

__all__ = ["MAX_SEED", "fresh_seed", "resolve_seed"]

#: Seeds are non-negative 63-bit integers (a signed BIGINT column holds them).
MAX_SEED = 2**63 - 1


def fresh_seed() -> int:
    """A new seed from the operating system's entropy, uniform on [0, MAX_SEED]."""
    return secrets.randbits(63)


def resolve_seed(seed: object, what: str = "seed") -> int:
    """``seed`` checked to lie in [0, MAX_SEED], or a :func:`fresh_seed` when it is None."""
    if seed is None:
        return fresh_seed()
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"{what} must be an integer in [0, 2**63 - 1], got {seed!r}")
    return int(seed)
