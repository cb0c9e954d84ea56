"""API keys: random secrets shown once, stored as SHA-256 (they carry 256 bits of entropy,
so a fast hash is enough), sent in the ``X-API-Key`` header.

A key is looked up in the request's own database session, and kept in this process's
:class:`KeyCache` for ``RAB_KEY_CACHE_TTL_S``, but only while the process hears revocations
(``app.replies``: every revocation is published on Redis and evicts the key from every API
process's cache at once). Without Redis every request reads its key, so either way a revoked
key is refused from the next request on."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any, NamedTuple

from fastapi import Request
from fastapi.security import APIKeyHeader
from sqlalchemy import bindparam, select, update
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


class KeyCache:
    """Valid keys by hash, each trusted for ``ttl_s`` while ``hearing`` revocations.

    A revocation (:meth:`forget`) also bumps a generation, and a lookup that began before it
    is not cached (:meth:`put`): a key read just before its revocation committed cannot be
    trusted after the revocation was heard."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[Caller, float]] = {}
        self._lock = threading.Lock()
        self.generation = 0
        self.hearing = False  # set by app.replies while its subscription is confirmed

    def get(self, digest: str) -> Caller | None:
        """The cached caller of key hash ``digest`` (None: read the database)."""
        entry = self._entries.get(digest)
        if entry is None or not self.hearing:
            return None
        if entry[1] < time.monotonic():
            self._entries.pop(digest, None)
            return None
        return entry[0]

    def put(self, digest: str, caller: Caller, generation: int) -> None:
        """Cache ``caller``, looked up when the generation was ``generation``."""
        with self._lock:
            if self.hearing and self._ttl_s > 0 and generation == self.generation:
                self._entries[digest] = (caller, time.monotonic() + self._ttl_s)

    def forget(self, key_id: str | None) -> None:
        """Evict key ``key_id`` (every key when None: revocations may have been missed)."""
        with self._lock:
            self.generation += 1
            if key_id is None:
                self._entries.clear()
            else:
                for digest in [d for d, (c, _) in self._entries.items() if c.key_id == key_id]:
                    del self._entries[digest]


def digest_of(secret: str | None) -> str:
    """The stored hash of ``secret`` (401 problem when there is no key at all)."""
    if not secret:
        raise ProblemError(401, "Unauthorized", "missing X-API-Key header")
    return hash_key(secret)


def cached_caller(request: Request, secret: str | None) -> Caller | None:
    """The caller of ``secret`` if this process trusts it without reading (401 problem when
    there is no key at all)."""
    caller = request.app.state.keys.get(digest_of(secret))
    if caller is not None:
        bind_request_context(key_id=caller.key_id)
    return caller


#: An unrevoked API key by the SHA-256 of its secret (read by the session or ``app.fastreads``).
KEY_READ = select(ApiKey.id, ApiKey.operator).where(
    ApiKey.key_hash == bindparam("digest"), ApiKey.revoked_at.is_(None)
)


def authenticate(request: Request, secret: str | None, session: Session) -> Caller:
    """The key ``secret``, read in the request's ``session`` (401 problem if missing, unknown
    or revoked) and cached; its id is recorded on the request for the logs (``app.logs``)."""
    digest, generation = digest_of(secret), request.app.state.keys.generation
    found = session.execute(KEY_READ, {"digest": digest}).one_or_none()
    return accept(request, digest, generation, found)


def accept(request: Request, digest: str, generation: int, found: Any) -> Caller:
    """The caller of the key row ``found`` ((id, operator); None: 401 problem), read for
    hash ``digest`` when the key cache's generation was ``generation``; cached."""
    if found is None:
        raise ProblemError(401, "Unauthorized", "unknown or revoked API key")
    caller = Caller(found[0], bool(found[1]))
    request.app.state.keys.put(digest, caller, generation)
    bind_request_context(key_id=caller.key_id)
    return caller
