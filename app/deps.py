"""FastAPI dependencies: the calling key (an operator key where one is needed), a database
session, the store and the settings; and the one rule of resource ownership (another key's
resources are not found)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request, Security
from sqlalchemy.orm import Session

from app.auth import API_KEY_HEADER, authenticate
from app.orm import Dataset, Job, Model, is_id
from app.problems import ProblemError, not_found
from app.settings import Settings
from models_store import ObjectStore


def owner_id(request: Request, secret: Annotated[str | None, Security(API_KEY_HEADER)]) -> str:
    """The id of the authenticated API key (401 otherwise)."""
    return authenticate(request, secret).key_id


def operator_id(
    request: Request, secret: Annotated[str | None, Security(API_KEY_HEADER)]
) -> str:
    """The id of the authenticated key if it is an operator key (401 without a valid key,
    403 with an ordinary one)."""
    caller = authenticate(request, secret)
    if not caller.operator:
        raise ProblemError(403, "Forbidden", "this needs an operator key")
    return caller.key_id


def db_session(request: Request) -> Iterator[Session]:
    """One session per request, committed when the handler returns (before the response is
    sent, so a client that got an answer finds its effects in the next request)."""
    with request.app.state.db.session() as session:
        yield session


def store(request: Request) -> ObjectStore:
    """The artefact store."""
    return request.app.state.store


def settings(request: Request) -> Settings:
    """The service settings."""
    return request.app.state.settings


Owner = Annotated[str, Depends(owner_id)]
Operator = Annotated[str, Depends(operator_id)]
DB = Annotated[Session, Depends(db_session, scope="function")]
Store = Annotated[ObjectStore, Depends(store)]
AppSettings = Annotated[Settings, Depends(settings)]

OwnedRow = TypeVar("OwnedRow", Dataset, Job, Model)


def owned(db: Session, row_type: type[OwnedRow], owner: str, ident: str) -> OwnedRow:
    """The ``row_type`` row ``ident`` if it belongs to ``owner``, else 404, whether or not it
    exists (so another key cannot even learn that it does)."""
    row = db.get(row_type, ident) if is_id(ident) else None  # a NUL byte never reaches SQL
    if row is None or row.owner_id != owner:
        raise not_found(row_type.__tablename__.removesuffix("s"), ident)
    return row
