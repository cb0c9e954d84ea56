"""FastAPI dependencies: the calling key (an operator key where one is needed), a database
session, the store and the settings; and the one rule of resource ownership (another key's
resources are not found).

A request has one database session, and the key is looked up in it, or on PostgreSQL from the
event loop (``app.fastreads``), unless the key cache (``app.auth``) has it. The dependencies
are coroutines that reach the database through the thread pool only when they must: a
session is created without a connection, a cached key needs none, and a session whose
transaction the handler already ended is closed without one; so a request costs as few
thread hops as its handler needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.auth import API_KEY_HEADER, Caller, accept, authenticate, cached_caller, digest_of
from app.db import finish
from app.orm import Dataset, Job, Model, is_id
from app.problems import ProblemError, not_found
from app.settings import Settings
from models_store import ObjectStore


async def db_session(request: Request) -> AsyncIterator[Session]:
    """One session per request, committed when the handler returns (before the response is
    sent, so a client that got an answer finds its effects in the next request); rolled back
    if it raises."""
    session = request.app.state.db.sessions()
    ok = False
    try:
        yield session
        ok = True
    finally:
        if session.in_transaction():
            await run_in_threadpool(finish, session, ok)
        else:
            session.close()


DB = Annotated[Session, Depends(db_session, scope="function")]


async def release(db: Session) -> None:
    """End ``db``'s transaction (the key lookup's), returning its connection to the pool
    before a route waits for something else (a request body, a worker)."""
    if db.in_transaction():
        await run_in_threadpool(db.commit)


async def _caller(request: Request, secret: str | None, db: Session | None) -> Caller:
    """The key from the cache, else from the fast-read pool (PostgreSQL), else read in ``db``
    (or, without one, in a short session of its own)."""
    cached = cached_caller(request, secret)
    if cached is not None:
        return cached
    reads = request.app.state.reads
    if reads is not None:
        digest, generation = digest_of(secret), request.app.state.keys.generation
        return accept(request, digest, generation, await reads.key(digest))
    if db is not None:
        return await run_in_threadpool(authenticate, request, secret, db)

    def read() -> Caller:
        with request.app.state.db.session() as session:
            return authenticate(request, secret, session)

    return await run_in_threadpool(read)


async def owner_id(
    request: Request, secret: Annotated[str | None, Security(API_KEY_HEADER)], db: DB
) -> str:
    """The id of the authenticated API key (401 otherwise)."""
    return (await _caller(request, secret, db)).key_id


async def operator_id(
    request: Request, secret: Annotated[str | None, Security(API_KEY_HEADER)], db: DB
) -> str:
    """The id of the authenticated key if it is an operator key (401 without a valid key,
    403 with an ordinary one)."""
    caller = await _caller(request, secret, db)
    if not caller.operator:
        raise ProblemError(403, "Forbidden", "this needs an operator key")
    return caller.key_id


async def reader_id(
    request: Request, secret: Annotated[str | None, Security(API_KEY_HEADER)]
) -> str:
    """:func:`owner_id` for a route that takes no session (the hot reads of
    ``app.fastreads``)."""
    return (await _caller(request, secret, None)).key_id


async def store(request: Request) -> ObjectStore:
    """The artefact store (a coroutine: a plain function would cost a thread hop)."""
    return request.app.state.store


async def settings(request: Request) -> Settings:
    """The service settings (a coroutine, as :func:`store`)."""
    return request.app.state.settings


Owner = Annotated[str, Depends(owner_id)]
Reader = Annotated[str, Depends(reader_id)]
Operator = Annotated[str, Depends(operator_id)]
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
