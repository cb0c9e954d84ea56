"""The S3 backend when the server goes away mid-transfer (a TCP proxy in front of a real moto
server cuts every connection): an interrupted upload publishes nothing and fails clearly, an
interrupted download is retried or fails clearly, and no partial bytes are ever read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from models_store import StoreUnavailableError
from models_store.s3 import MULTIPART_THRESHOLD, S3Store

from .s3server import FaultProxy, S3Server

pytestmark = pytest.mark.slow  # botocore backs off between its retries


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    fault = FaultProxy(int(urlparse(s3_server.endpoint).port or 0))
    yield fault
    fault.close()


def _files(store: S3Store) -> list[Path]:
    """Everything in the store's staging area and local cache."""
    return [*store.staging_dir.iterdir(), *store.cache.objects_dir.glob("??/*")]


@pytest.mark.parametrize("size", [50_000, MULTIPART_THRESHOLD + 4_000_000])
def test_server_gone_mid_upload_publishes_nothing(
    s3_server: S3Server, proxy: FaultProxy, tmp_path: Path, size: int
) -> None:
    bucket = s3_server.new_bucket()
    store = s3_server.store(tmp_path / "writer", bucket, endpoint=proxy.endpoint)
    data = np.random.default_rng(size).bytes(size)
    proxy.cut_after(upload=size - 20_000)  # within the (last) part
    with pytest.raises(StoreUnavailableError, match="failed writing"):
        store.put_bytes(data)
    assert proxy.cuts == 1
    assert _files(store) == []
    direct = s3_server.store(tmp_path / "other", bucket)  # the server itself, not the proxy
    assert list(direct.list_objects()) == []  # no object, not even a partial one
    proxy.up()
    digest = store.put_bytes(data)  # the server is back: the same write succeeds
    assert direct.get_bytes(digest) == data


def test_download_cut_once_is_retried(
    s3_server: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket()
    data = np.random.default_rng(7).bytes(8_000_000)
    digest = s3_server.store(tmp_path / "writer", bucket).put_bytes(data)
    reader = s3_server.store(tmp_path / "reader", bucket, endpoint=proxy.endpoint)
    proxy.cut_after(download=3_000_000, stay_down=False)
    assert reader.get_bytes(digest) == data
    assert proxy.cuts == 1


def test_server_gone_mid_download_fails_clearly_and_caches_nothing(
    s3_server: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket()
    data = np.random.default_rng(8).bytes(8_000_000)
    digest = s3_server.store(tmp_path / "writer", bucket).put_bytes(data)
    reader = s3_server.store(tmp_path / "reader", bucket, endpoint=proxy.endpoint)
    proxy.cut_after(download=3_000_000)
    with pytest.raises(StoreUnavailableError, match=f"failed reading {digest}"):
        reader.get_bytes(digest)
    assert _files(reader) == []
    proxy.up()
    assert reader.get_bytes(digest) == data
