"""POST /v1/datasets (upload or built-in), GET /v1/datasets[/{id}]."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import select

import contract.api as wire
from app import quotas
from app.datasets import dataset_from_builtin, dataset_from_file, register, to_out
from app.deps import DB, AppSettings, Owner, Store, owned, release
from app.orm import Dataset as DatasetRow
from app.paging import Cursor, Limit, keyset_page
from app.problems import bad_input
from app.uploads import read_upload
from contract.api import BuiltinDatasetIn, DatasetOptions, Page

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "format": {"type": "string", "enum": ["npz", "csv"]},
                        "options": {
                            "type": "string",
                            "description": "JSON of DatasetOptions",
                            "example": '{"classes": [0, 1], "split_seed": 0}',
                        },
                    },
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/BuiltinDatasetIn"}},
        },
    }
}


def _options(raw: str | None) -> DatasetOptions:
    try:
        return DatasetOptions.model_validate(json.loads(raw) if raw else {})
    except (ValueError, ValidationError) as exc:
        raise bad_input(f"invalid options: {exc}") from None


@router.post(
    "",
    status_code=201,
    response_model=wire.Dataset,
    openapi_extra=_UPLOAD_DOC,
    responses={
        200: {"description": "This key already has a dataset with the same content."},
        400: {"description": "Malformed multipart body."},
        403: {"description": "A download was asked for and this server does not download."},
        409: {"description": "The named built-in data set is not installed on the server."},
        413: {"description": "The body exceeds RAB_MAX_UPLOAD_BYTES."},
        415: {"description": "Neither JSON nor multipart/form-data."},
        502: {"description": "Downloading the built-in data set failed."},
    },
)
async def create_dataset(
    request: Request, response: Response, owner: Owner, db: DB, store: Store,
    settings: AppSettings,
) -> wire.Dataset:
    """Upload an npz/CSV file (multipart, field ``file``) or name a built-in set (JSON)."""
    await release(db)  # no connection held while the body arrives
    if request.headers.get("content-type", "").startswith("application/json"):
        try:  # the body is bounded by app.uploads.BoundedBodies
            spec = BuiltinDatasetIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise bad_input(f"invalid built-in dataset request: {exc}") from None
        dataset = await run_in_threadpool(dataset_from_builtin, spec, settings)
        source: dict[str, Any] = {"kind": "builtin", "name": spec.builtin}
    else:
        upload = await read_upload(request, store, settings.max_upload_bytes)
        try:
            if upload.file is None:
                raise bad_input("the form has no 'file' part")
            options = _options(upload.fields.get("options"))
            dataset = await run_in_threadpool(
                dataset_from_file,
                upload.file.path, upload.fields.get("format"), upload.filename, options,
                settings.max_decompressed_bytes,
            )
            source = {"kind": "upload", "file": upload.filename,
                      "upload_sha256": upload.file.sha256, "upload_bytes": upload.file.size}
        finally:
            upload.discard()
    size = sum(getattr(dataset, name).nbytes for name in ("X_train", "y_train", "X_test", "y_test"))
    await run_in_threadpool(quotas.check_storage, db, owner, settings, size)
    row, created = await run_in_threadpool(register, db, store, owner, dataset, source)
    await run_in_threadpool(db.flush)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    return to_out(row)


@router.get("", response_model=Page[wire.Dataset])
def list_datasets(
    owner: Owner, db: DB, after: Cursor = None, limit: Limit = 50
) -> Page[wire.Dataset]:
    """The key's datasets, oldest first."""
    query = select(DatasetRow).where(DatasetRow.owner_id == owner)
    rows, cursor = keyset_page(db, DatasetRow, owner, query, after, limit, newest_first=False)
    return Page[wire.Dataset](items=[to_out(r) for r in rows], next_cursor=cursor)


@router.get("/{dataset_id}", response_model=wire.Dataset)
def get_dataset(dataset_id: str, owner: Owner, db: DB) -> wire.Dataset:
    """Describe one dataset."""
    return to_out(owned(db, DatasetRow, owner, dataset_id))

