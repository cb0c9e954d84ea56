"""The store on any S3-compatible service (AWS S3, MinIO, ...), through boto3.

Objects are keys ``<prefix>objects/ab/cdef...``. The endpoint, region and credentials come
from boto3's standard configuration (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles, instance roles).

Writes use boto3's managed transfer: one PUT below ``MULTIPART_THRESHOLD`` bytes, a multipart
upload above it. Either makes the object visible under its name only when complete (a PUT and
a CompleteMultipartUpload are atomic; an interrupted multipart upload is aborted and never
visible), and both are sent with ``If-None-Match: *`` so that an existing object is never
overwritten (a 412 answer means another writer published the same bytes first). Reads go
through the machine's ``ReadCache``, which verifies every read against the object's name.
Network errors are retried by botocore (``RETRIES`` attempts, adaptive back-off); when they
persist the operation fails with ``StoreUnavailableError`` and nothing is published or read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from models_store.cache import ReadCache
from models_store.store import (
    ObjectInfo,
    ObjectMissingError,
    ObjectStore,
    StoreUnavailableError,
    check_name,
)

MULTIPART_THRESHOLD = 16 * 1024 * 1024
RETRIES = 5
_TRANSFER = TransferConfig(
    multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
)
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_EXISTS = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}
_TransferErrors = (BotoCoreError, ClientError, S3UploadFailedError)


def _code(exc: Exception) -> str:
    """The S3 error code of a (wrapped) client error ('' if none)."""
    while exc is not None:
        if isinstance(exc, ClientError):
            return str(exc.response.get("Error", {}).get("Code", ""))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return ""


def _no_overwrite(params: dict[str, Any], **_: Any) -> None:
    """botocore hook: send every PUT / multipart completion as create-only."""
    params.setdefault("IfNoneMatch", "*")


def make_client() -> Any:
    """A boto3 S3 client from the standard AWS configuration, with retries and timeouts."""
    config = Config(
        retries={"max_attempts": RETRIES, "mode": "adaptive"},
        connect_timeout=5, read_timeout=60,
        s3={"addressing_style": os.environ.get("AWS_S3_ADDRESSING_STYLE", "path")},
    )
    client = boto3.session.Session().client("s3", config=config)
    for operation in ("PutObject", "CompleteMultipartUpload"):
        client.meta.events.register(f"provide-client-params.s3.{operation}", _no_overwrite)
    return client


class S3Store(ObjectStore):
    """Objects in ``bucket`` under ``prefix``, read through ``cache`` (whose ``tmp`` directory
    is also the staging area of new objects)."""

    def __init__(self, bucket: str, prefix: str, cache: ReadCache, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.cache = cache
        self.client = client if client is not None else make_client()
        super().__init__(cache.tmp_dir)

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``, for messages."""
        return f"s3://{self.bucket}/{self.prefix}"

    def key_of(self, sha256: str) -> str:
        """The object key of ``sha256``."""
        check_name(sha256)
        return f"{self.prefix}objects/{sha256[:2]}/{sha256[2:]}"

    def _unavailable(self, doing: str, sha256: str, exc: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(f"object store {self.url} failed {doing} {sha256}: {exc}")

    def exists(self, sha256: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key_of(sha256))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return False
            raise self._unavailable("looking up", sha256, exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("looking up", sha256, exc) from exc
        return True

    def publish(self, path: Path, sha256: str) -> bool:
        # A large object is looked up first, to spare uploading it again; a small one is just
        # sent (create-only: the server refuses it if the object exists).
        if path.stat().st_size < MULTIPART_THRESHOLD or not self.exists(sha256):
            try:
                self.client.upload_file(
                    str(path), self.bucket, self.key_of(sha256), Config=_TRANSFER
                )
            except _TransferErrors as exc:
                if _code(exc) not in _EXISTS:  # else: published meanwhile by another writer
                    raise self._unavailable("writing", sha256, exc) from exc
        self.cache.add(path, sha256)  # the writer's machine reads its own objects locally
        return False

    def _download(self, sha256: str) -> Any:
        def download(target: BinaryIO) -> None:
            try:
                self.client.download_fileobj(
                    self.bucket, self.key_of(sha256), target, Config=_TRANSFER
                )
            except _TransferErrors as exc:
                if _code(exc) in _NOT_FOUND:
                    raise ObjectMissingError(
                        f"object {sha256} is not in the store {self.url}"
                    ) from None
                raise self._unavailable("reading", sha256, exc) from exc

        return download

    def open(self, sha256: str) -> BinaryIO:
        return self.cache.open(sha256, self._download(sha256))

    def list_objects(self) -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}objects/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                parts = item["Key"].rsplit("/", 2)
                yield ObjectInfo(parts[-2] + parts[-1], item["Size"], item["LastModified"])

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key_of(sha256))
        self.cache.discard(sha256)
