"""FastAPI dependencies: the calling key, a database session, the store and the settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from sqlalchemy.orm import Session

from app.auth import API_KEY_HEADER, authenticate
from app.settings import Settings
from models_store import ObjectStore


def owner_id(request: Request, secret: Annotated[str | None, Security(API_KEY_HEADER)]) -> str:
    """The id of the authenticated API key (401 otherwise)."""
    return authenticate(request, secret)


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
DB = Annotated[Session, Depends(db_session, scope="function")]
Store = Annotated[ObjectStore, Depends(store)]
AppSettings = Annotated[Settings, Depends(settings)]
