"""Turning uploads and built-in names into validated ``rab.data.Dataset`` objects and rows.

Parsing and validation are ``rab.data``'s (``allow_pickle=False``, strict CSV, finite values,
label checks); every ``ValueError`` it raises becomes a 422 problem and nothing is stored.
A dataset is identified by its content hash: the same content uploaded twice by one key gives
the same row, and by two keys two rows over one stored object.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from threading import Lock
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import contract.api as wire
import rab.data as rd
from app.artefacts import dataset_bytes, record_object
from app.orm import Dataset as DatasetRow
from app.problems import ProblemError, bad_input
from app.settings import Settings
from contract.api import NAME, BuiltinDatasetIn, DatasetOptions
from models_store import ObjectStore
from rab.data.vision import DownloadError
from rab.evaluation.datasets import DatasetSpec
from rab.evaluation.datasets import load_dataset as load_named
from rab.extras import MissingExtraError

_DOWNLOADS = Lock()  # two requests must not write the same files at once


def _format_of(declared: str | None, filename: str | None) -> str:
    fmt = (declared or Path(filename or "").suffix.lstrip(".")).lower()
    if fmt not in ("npz", "csv"):
        raise bad_input(
            f"unknown upload format {fmt!r}: send a form field format=npz|csv or a file "
            "named *.npz / *.csv"
        )
    return fmt


def dataset_from_file(
    path: Path, fmt: str | None, filename: str | None, options: DatasetOptions, max_bytes: int
) -> rd.Dataset:
    """Parse and validate an uploaded npz or CSV file; an npz's arrays may need at most
    ``max_bytes`` decompressed (checked before they are decompressed)."""
    kind = _format_of(fmt, filename)
    pre = options.preprocessing.build()
    name = options.name or Path(filename or f"upload.{kind}").stem
    try:
        NAME.validate_python(name)
    except ValidationError as exc:
        detail = exc.errors()[0]["msg"]
        raise bad_input(f"invalid dataset name (from the file name): {detail}") from None
    try:
        if kind == "npz":
            return rd.load_npz(
                path, classes=options.classes, preprocessing=pre, name=name,
                test_fraction=options.test_fraction, split_seed=options.split_seed,
                max_bytes=max_bytes,
            )
        return rd.load_csv(
            path, label_column=options.label_column, header=options.header,
            classes=options.classes, preprocessing=pre or rd.RAW, name=name,
            test_fraction=options.test_fraction, split_seed=options.split_seed,
        )
    except ValueError as exc:
        raise bad_input(str(exc).replace(str(path), filename or "upload")) from None


def _named(spec: BuiltinDatasetIn) -> DatasetSpec:
    """The ``rab.evaluation`` spec of a built-in request (422 when it is not valid)."""
    try:
        return DatasetSpec(
            source=spec.builtin, name=spec.builtin,
            classes=None if spec.classes is None else tuple(spec.classes),
            variant=spec.variant, split_seed=spec.split_seed, train_size=spec.train_size,
            test_size=spec.test_size, subset_seed=spec.subset_seed, download=spec.download,
        )
    except ValueError as exc:
        raise bad_input(str(exc)) from None


def dataset_from_builtin(spec: BuiltinDatasetIn, settings: Settings) -> rd.Dataset:
    """A named built-in dataset, loaded by ``rab.evaluation`` from the built-in data directory.

    Only the listed names reach the loader (never a path from the request). ``download`` is
    refused (403) unless the server allows downloads; downloads run one at a time.
    """
    named = _named(spec)
    if named.download and not settings.allow_downloads:
        raise ProblemError(
            403, "Downloads disabled",
            "this server does not download datasets; install the files under "
            f"{settings.resolved_shared_data} or start the server with RAB_ALLOW_DOWNLOADS=1",
        )
    try:
        with _DOWNLOADS if named.download else nullcontext():
            return load_named(named, data_dir=settings.resolved_shared_data)
    except FileNotFoundError as exc:
        raise ProblemError(
            409, "Built-in data not installed", f"{exc}; set RAB_SHARED_DATA"
        ) from None
    except MissingExtraError as exc:  # torchvision's layouts on an API installed without torch
        raise ProblemError(409, "Built-in data not installed", f"on this server {exc}") from None
    except DownloadError as exc:
        raise ProblemError(502, "Download failed", str(exc)) from None
    except ValueError as exc:
        raise bad_input(str(exc)) from None


def register(
    session: Session,
    store: ObjectStore,
    owner_id: str,
    dataset: rd.Dataset,
    source: dict[str, Any],
) -> tuple[DatasetRow, bool]:
    """The owner's row for ``dataset`` (created if new); the bool says whether it was created.

    ``source`` says where it came from (``{"kind": "upload", "upload_sha256": ...}`` or
    ``{"kind": "builtin", "name": ...}``). The canonical bytes are stored once per content
    hash, whoever uploads them, only after the rows referring to them were inserted (a row
    that the database refuses leaves no object behind), and a key's new dataset costs the
    same work whether or not another key has the content.
    """
    digest = dataset.sha256
    mine = select(DatasetRow).where(
        DatasetRow.owner_id == owner_id, DatasetRow.content_sha256 == digest
    )
    existing = session.scalar(mine)
    if existing is not None:
        return existing, False
    # Serialised, recorded and written again even when another key has the same content (a
    # no-op publish of identical bytes): skipping that work would make a second key's upload
    # faster, telling it by timing that someone else already has this data.
    canonical = dataset_bytes(dataset)
    object_sha = record_object(session, canonical, "dataset")
    summary = dataset.summary()
    row = DatasetRow(
        owner_id=owner_id,
        name=dataset.name,
        source=source["kind"],
        content_sha256=digest,
        object_sha256=object_sha,
        input_shape=summary["input_shape"],
        class_names=summary["class_names"],
        train_counts=summary["train_class_counts"],
        test_counts=summary["test_class_counts"],
        feature_range=None if dataset.feature_range is None else list(dataset.feature_range),
        provenance={
            "source": {**dataset.meta.get("source", {}), **source},
            "preprocessing": dataset.meta.get("preprocessing"),
            "original_labels": dataset.meta.get("original_labels"),
            "split": dataset.meta.get("split"),
        },
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # the same content raced in from a concurrent request
        existing = session.scalar(mine)
        if existing is None:  # the unique row that refused the insert cannot vanish
            raise RuntimeError("a concurrent dataset row disappeared") from None
        row, created = existing, False
    else:
        created = True
    store.put_bytes(canonical)
    return row, created


def to_out(row: DatasetRow) -> wire.Dataset:
    """The API view of a dataset row (validated: its JSON list columns become tuples)."""
    return wire.Dataset.model_validate({
        "id": row.id,
        "name": row.name,
        "source": row.source,
        "sha256": row.content_sha256,
        "input_shape": row.input_shape,
        "class_names": row.class_names,
        "num_classes": len(row.class_names),
        "train_size": sum(row.train_counts),
        "test_size": sum(row.test_counts),
        "train_class_counts": row.train_counts,
        "test_class_counts": row.test_counts,
        "feature_range": row.feature_range,
        "provenance": row.provenance,
        "created_at": row.created_at,
    })
