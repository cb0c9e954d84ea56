"""On-disk layout of a trained ensemble: one state_dict file and one JSON sidecar per model.

```
out_dir/ensemble.json        manifest: configuration and training-data fingerprint
out_dir/model_00000.pt       torch.save(state_dict) bytes of model 0
out_dir/model_00000.json     sidecar: sha256 of those bytes, test-noise seed, training seeds, ...
```

Files are written atomically (temporary file, fsync, rename, directory fsync), model first and
sidecar second, so a crash never leaves a model that looks finished: a model counts as done only
when both files exist and the model bytes hash to the sidecar's sha256. The test-noise seed is a
function of that hash (section 6.1), recorded so that votes can be reproduced.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rab.ensemble.config import EnsembleConfig
from rab.ensemble.noise import noise_seed_from_digest

MANIFEST = "ensemble.json"
FORMAT_VERSION = 1


def model_path(out_dir: Path, index: int) -> Path:
    """Path of model ``index``'s state_dict file."""
    return Path(out_dir) / f"model_{index:05d}.pt"


def sidecar_path(out_dir: Path, index: int) -> Path:
    """Path of model ``index``'s JSON sidecar."""
    return Path(out_dir) / f"model_{index:05d}.json"


@dataclass(frozen=True)
class MemberArtifact:
    """One trained model: its saved bytes, their SHA-256, its test-noise seed and metadata."""

    index: int
    state_dict_bytes: bytes = field(repr=False)
    sha256: str
    noise_seed: int
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.state_dict_bytes).hexdigest()
        if digest != self.sha256:
            raise ValueError(f"model {self.index}: bytes hash to {digest}, not {self.sha256}")
        if self.noise_seed != noise_seed_from_digest(self.sha256):
            raise ValueError(f"model {self.index}: noise seed is not derived from its hash")

    @classmethod
    def from_bytes(cls, index: int, data: bytes, meta: dict[str, Any]) -> MemberArtifact:
        """Hash ``data`` and derive the test-noise seed from the digest."""
        digest = hashlib.sha256(data).hexdigest()
        return cls(index, data, digest, noise_seed_from_digest(digest), dict(meta))

    def sidecar(self) -> dict[str, Any]:
        """JSON-ready record written next to the model."""
        return {"index": self.index, "sha256": self.sha256, "noise_seed": self.noise_seed,
                **self.meta}


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _json_bytes(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=1, sort_keys=True) + "\n").encode()


def write_member(out_dir: Path, artifact: MemberArtifact) -> Path:
    """Store ``artifact`` in ``out_dir``, model file first, then sidecar; return the model path."""
    path = model_path(out_dir, artifact.index)
    atomic_write(path, artifact.state_dict_bytes)
    atomic_write(sidecar_path(out_dir, artifact.index), _json_bytes(artifact.sidecar()))
    return path


def read_member(out_dir: Path, index: int) -> MemberArtifact:
    """Load model ``index``'s bytes and sidecar, verifying the hash (ValueError if it fails)."""
    side = sidecar_path(out_dir, index)
    path = model_path(out_dir, index)
    if not side.is_file() or not path.is_file():
        raise ValueError(f"model {index} is missing from {out_dir}")
    record = json.loads(side.read_text())
    meta = {k: v for k, v in record.items() if k not in ("index", "sha256", "noise_seed")}
    return MemberArtifact(index, path.read_bytes(), record["sha256"], record["noise_seed"], meta)


def member_complete(out_dir: Path, index: int) -> bool:
    """True when model ``index`` is stored with a sidecar whose sha256 matches the bytes."""
    try:
        read_member(out_dir, index)
    except (ValueError, KeyError, json.JSONDecodeError):
        return False
    return True


def data_fingerprint(X: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of the training arrays (dtype, shape and bytes of X and y)."""
    digest = hashlib.sha256()
    for array in (X, y):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def manifest(config: EnsembleConfig, data_sha256: str) -> dict[str, Any]:
    """The manifest of an ensemble directory (``num_models`` is not part of model identity)."""
    return {"format": FORMAT_VERSION, "config": config.to_dict(),
            "member_fingerprint": config.member_fingerprint(), "data_sha256": data_sha256}


def open_directory(out_dir: Path, config: EnsembleConfig, data_sha256: str) -> None:
    """Create ``out_dir`` with its manifest, or check that an existing one trained the same way.

    Raises ValueError when ``out_dir`` holds models of another configuration or training set:
    mixing them would silently void the certificate.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = manifest(config, data_sha256)
    path = out_dir / MANIFEST
    if path.is_file():
        found = json.loads(path.read_text())
        for key in ("member_fingerprint", "data_sha256"):
            if found.get(key) != wanted[key]:
                raise ValueError(f"{out_dir} holds an ensemble with another {key} "
                                 f"({found.get(key)} != {wanted[key]}); use a new directory")
        if found["config"]["num_models"] >= config.num_models:
            return
    atomic_write(path, _json_bytes(wanted))


def read_config(out_dir: Path) -> EnsembleConfig:
    """The configuration recorded in ``out_dir``'s manifest."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{out_dir} has no {MANIFEST}: not an ensemble directory")
    return EnsembleConfig.from_dict(json.loads(path.read_text())["config"])
