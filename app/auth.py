"""API keys: random secrets shown once, stored as SHA-256 (they carry 256 bits of entropy,
so a fast hash is enough), sent in the ``X-API-Key`` header. Every request looks its key up
anew, so a revoked key is refused from the next request on."""

from __future__ import annotations

import hashlib
import secrets
from typing import NamedTuple

from fastapi import Request
from fastapi.security import APIKeyHeader
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.logs import bind_request_context
from app.orm import ApiKey, utcnow
from app.problems import ProblemError

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
_PREFIX = "rab_"


class Caller(NamedTuple):
    """The authenticated key: its id and whether it is an operator's."""

    key_id: str
    operator: bool


def hash_key(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, name: str, operator: bool = False) -> tuple[ApiKey, str]:
    """Create a key row; returns it and the secret (which is not stored)."""
    secret = _PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=hash_key(secret), operator=operator)
    session.add(row)
    session.flush()
    return row, secret


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(session: Session, key_id: str) -> bool:
    """Revoke the key ``key_id``; False if there is no such key or it is already revoked."""
    revoked = session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(revoked.rowcount)  # type: ignore[attr-defined]


def authenticate(request: Request, secret: str | None) -> Caller:
    """The key ``secret`` (401 problem if missing, unknown or revoked); its id is recorded on
    the request for the logs (``app.logs``)."""
    if not secret:
        raise ProblemError(401, "Unauthorized", "missing X-API-Key header")
    with request.app.state.db.session() as session:
        found = session.execute(
            select(ApiKey.id, ApiKey.operator).where(
                ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None)
            )
        ).one_or_none()
    if found is None:
        raise ProblemError(401, "Unauthorized", "unknown or revoked API key")
    caller = Caller(found.id, found.operator)
    bind_request_context(key_id=caller.key_id)
    return caller
