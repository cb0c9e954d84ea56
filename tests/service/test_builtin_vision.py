"""Built-in ``mnist`` / ``cifar10`` through torchvision's on-disk layout, over real HTTP.

A dedicated API server (SQLite, local store; no worker: datasets are registered by the API) reads
``RAB_SHARED_DATA``, where the test writes a small MNIST in torchvision's IDX layout from
real MNIST digits (``mnist_01.npz``). Downloads are refused (403) unless the server sets
``RAB_ALLOW_DOWNLOADS``, and a failed download is a 502; neither stores anything.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import rab.data as rd
from rab.evaluation.datasets import subsample

from .conftest import REPO_ROOT, create_key, free_port, stop, wait_healthy
from .helpers import is_problem

N_TRAIN, N_TEST = 60, 20
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801  # magic numbers: uint8, 3 or 1 dimensions


@dataclass
class Server:
    """A running API: its HTTP client, built-in data directory and store directory."""

    client: httpx.Client
    builtin_dir: Path
    store_dir: Path

    def stored(self) -> tuple[int, int]:
        """(the key's datasets, stored files): what a refused request must not change."""
        listed = self.client.get("/v1/datasets", params={"limit": 1000})
        assert listed.status_code == 200, listed.text
        files = sum(1 for p in self.store_dir.rglob("*") if p.is_file())
        return len(listed.json()["items"]), files


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    """``array`` (uint8) in the IDX format torchvision's MNIST reads (big-endian header)."""
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _write_mnist(root: Path, source: Path) -> dict[str, np.ndarray]:
    """A seeded subset of ``source`` as ``root/MNIST/raw/*-ubyte``; returns its labels."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(7)
    labels = {}
    with np.load(source, allow_pickle=False) as data:
        for split, prefix, n in (("train", "train", N_TRAIN), ("test", "t10k", N_TEST)):
            keep = np.sort(rng.choice(len(data[f"y_{split}"]), size=n, replace=False))
            _write_idx(raw / f"{prefix}-images-idx3-ubyte", IDX_IMAGES, data[f"X_{split}"][keep])
            labels[split] = data[f"y_{split}"][keep]
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte", IDX_LABELS, labels[split])
    return labels


@contextmanager
def api_server(root: Path, builtin_dir: Path, **extra_env: str) -> Iterator[Server]:
    """An API subprocess in the embedded mode (SQLite) over ``builtin_dir``, with one key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAB_")}
    env.update(
        RAB_DATA_DIR=str(root / "data"), RAB_STORE_DIR=str(root / "store"),
        RAB_SHARED_DATA=str(builtin_dir), **extra_env,
    )
    key = create_key(env, "vision")
    port, log = free_port(), root / "api.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=REPO_ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process, log)
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=120) as client:
            yield Server(client, builtin_dir, root / "store")
    finally:
        stop(process)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, Any]:
    """A built-in data directory holding a small MNIST in torchvision's layout, and its labels."""
    root = tmp_path_factory.mktemp("builtin")
    return root, _write_mnist(root, shared_data / "mnist_01.npz")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, mnist_dir: tuple[Path, Any]
) -> Iterator[Server]:
    """The API over that directory, downloads disabled (the default)."""
    with api_server(tmp_path_factory.mktemp("vision-api"), mnist_dir[0]) as running:
        yield running


def test_builtin_mnist_reads_torchvision_layout(
    server: Server, mnist_dir: tuple[Path, Any]
) -> None:
    root, labels = mnist_dir
    response = server.client.post("/v1/datasets", json={"builtin": "mnist", "classes": [0, 1]})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["input_shape"] == [1, 28, 28] and body["feature_range"] == [0.0, 1.0]
    assert body["class_names"] == ["0", "1"]
    assert body["train_class_counts"] == np.bincount(labels["train"], minlength=2).tolist()
    assert body["test_class_counts"] == np.bincount(labels["test"], minlength=2).tolist()
    assert (body["train_size"], body["test_size"]) == (N_TRAIN, N_TEST)
    assert body["sha256"] == rd.load_mnist(root, classes=[0, 1]).sha256
    assert body["provenance"]["source"]["kind"] == "builtin"
    assert body["provenance"]["source"]["name"] == "mnist"

    again = server.client.post("/v1/datasets", json={"builtin": "mnist", "classes": [0, 1]})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == body["id"]


def test_builtin_mnist_class_names_and_subset(
    server: Server, mnist_dir: tuple[Path, Any]
) -> None:
    request = {"builtin": "mnist", "classes": ["1", "0"], "train_size": 10, "test_size": 5,
               "subset_seed": 3}
    response = server.client.post("/v1/datasets", json=request)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["class_names"] == ["1", "0"]
    assert (body["train_size"], body["test_size"]) == (10, 5)
    local = subsample(rd.load_mnist(mnist_dir[0], classes=[1, 0]), 10, 5, 3)
    assert body["sha256"] == local.sha256


def test_download_refused_when_disabled(server: Server) -> None:
    before = server.stored()
    response = server.client.post("/v1/datasets", json={"builtin": "mnist", "download": True})
    assert is_problem(response, 403), response.text
    assert "RAB_ALLOW_DOWNLOADS" in response.json()["detail"]
    assert server.stored() == before


def test_cifar10_not_installed(server: Server) -> None:
    before = server.stored()
    response = server.client.post("/v1/datasets", json={"builtin": "cifar10"})
    assert is_problem(response, 409), response.text
    body = response.json()
    assert body["title"] == "Built-in data not installed"
    assert str(server.builtin_dir) in body["detail"] and "RAB_SHARED_DATA" in body["detail"]
    assert server.stored() == before


@pytest.mark.parametrize("name", ["digits", "mnist01"])
def test_download_only_for_torchvision_names(server: Server, name: str) -> None:
    response = server.client.post("/v1/datasets", json={"builtin": name, "download": True})
    assert is_problem(response, 422), response.text
    assert "download" in response.json()["detail"]


def _mirror_reachable() -> bool:
    """Whether this machine resolves torchvision's first MNIST mirror (then it could download)."""
    try:
        socket.getaddrinfo("ossci-datasets.s3.amazonaws.com", 443)
    except OSError:
        return False
    return True


def test_failed_download_is_502(tmp_path: Path) -> None:
    if _mirror_reachable():
        pytest.skip("the MNIST mirror resolves here: a download could succeed")
    empty = tmp_path / "builtin"
    empty.mkdir()
    with api_server(tmp_path, empty, RAB_ALLOW_DOWNLOADS="1") as running:
        before = running.stored()
        started = time.monotonic()
        response = running.client.post(
            "/v1/datasets", json={"builtin": "mnist", "download": True}
        )
        assert time.monotonic() - started < 20
        assert response.status_code == 502, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "MNIST" in response.json()["detail"]
        assert running.stored() == before


def test_without_torchvision_the_api_names_the_torch_extra(
    tmp_path: Path, mnist_dir: tuple[Path, Any]
) -> None:
    # the API image installs no torch: torchvision's layouts are refused with the extra named
    blocker = tmp_path / "no-torchvision"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['torchvision'] = None\n")
    path = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH")) if p)
    with api_server(tmp_path, mnist_dir[0], PYTHONPATH=path) as running:
        before = running.stored()
        response = running.client.post("/v1/datasets", json={"builtin": "mnist"})
        assert is_problem(response, 409), response.text
        assert "pip install 'rab-certify[torch]'" in response.json()["detail"]
        digits = running.client.post("/v1/datasets", json={"builtin": "digits"})
        assert digits.status_code in (200, 201), digits.text
        assert running.stored() != before
