"""DNN-RAB: train N models on Gaussian-noised copies of the training set, vote, certify.

Paper section 6.1 and Algorithm 1 (DP-SGD variant: section 6.2). Modules, one job each:

- ``config``: :class:`EnsembleConfig`, the authors' presets, DP-SGD presets (no torch);
- ``noise``: seeded training noise d_k and hash-seeded test-time noise u_k (no torch);
- ``artifacts``: per-model files, sidecars, atomic writes, manifest (no torch);
- ``train``: :func:`train_member`, :func:`train_members_batched`, :func:`train_members`,
  :func:`train_ensemble`;
- ``dp``: DP-SGD through Opacus with privacy accounting;
- ``predict``: loading models and computing their votes on x + u_k;
- ``stacked``: many members as one stacked model (``vmap``), the votes the services use;
- ``vote``: :class:`VoteMatrices`, stored votes (no torch);
- ``certify``: certificates from stored votes through :mod:`rab.bounds` (no torch).

Names are imported lazily so that the torch-free parts can be used without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "DPConfig": "config",
    "DP_PRESETS": "config",
    "EnsembleConfig": "config",
    "TRAINING_PRESETS": "config",
    "preset": "config",
    "inference_noise": "noise",
    "member_seeds": "noise",
    "noise_seed_from_digest": "noise",
    "training_noise": "noise",
    "MemberArtifact": "artifacts",
    "read_member": "artifacts",
    "write_member": "artifacts",
    "train_ensemble": "train",
    "train_member": "train",
    "train_members": "train",
    "train_members_batched": "train",
    "Member": "predict",
    "iter_members": "predict",
    "load_member": "predict",
    "predict_votes": "predict",
    "StackedMembers": "stacked",
    "stack_members": "stacked",
    "stacked_votes": "stacked",
    "VoteMatrices": "vote",
    "certify_votes": "certify",
    "expected_certificates": "certify",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rab.ensemble' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rab.ensemble.{_EXPORTS[name]}"), name)
