"""API keys: random secrets shown once, stored as SHA-256 (they carry 256 bits of entropy,
so a fast hash is enough), sent in the ``X-API-Key`` header."""

from __future__ import annotations

import hashlib
import secrets

from fastapi import Request
from fastapi.security import APIKeyHeader
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.orm import ApiKey
from app.problems import ProblemError

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
_PREFIX = "rab_"


def hash_key(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Create a key row; returns it and the secret (which is not stored)."""
    secret = _PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=hash_key(secret))
    session.add(row)
    session.flush()
    return row, secret


def authenticate(request: Request, secret: str | None) -> str:
    """The id of the key ``secret``, or a 401 problem."""
    if not secret:
        raise ProblemError(401, "Unauthorized", "missing X-API-Key header")
    with request.app.state.db.session() as session:
        key_id = session.scalar(
            select(ApiKey.id).where(
                ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None)
            )
        )
    if key_id is None:
        raise ProblemError(401, "Unauthorized", "unknown or revoked API key")
    return key_id
