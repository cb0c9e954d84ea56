"""Hot reads on PostgreSQL without the thread pool: the API-key lookup, ``GET`` of one
certificate and the certificates that answer a certify request, run on an asyncpg pool from
the event loop.

A sync route costs two thread hops and the ORM's per-statement work; on the read that the
online use repeats most (one certificate, its radius) that was most of its cost (measured in
``bench/bench_read_path.py``). The statements are the ORM's own (``app.orm``), built once by
SQLAlchemy and compiled to PostgreSQL's positional form, so each read has one definition:
:data:`CERTIFICATE_READ` and ``app.auth.KEY_READ`` serve both this pool and the sync sessions.

The pool opens on first use and after a failure (the database away gives 503, as the sync
path's ``OperationalError`` does); a read that meets a dropped connection is tried once more on
a fresh one (reads are idempotent). SQLite (the embedded default) has no such pool: the routes
read through their session in the thread pool (:func:`available` is False).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url

from app.auth import KEY_READ
from app.orm import Certificate, Job
from app.problems import ProblemError
from app.settings import Settings

log = logging.getLogger(__name__)

#: A certificate row's columns, read as a mapping (by a session, or by asyncpg here).
CERTIFICATE_COLUMNS = tuple(Certificate.__table__.columns)
#: One certificate of a job, read together with the ownership check (another key's: no row).
CERTIFICATE_READ: Select[Any] = (
    select(*CERTIFICATE_COLUMNS)
    .join(Job, Job.id == Certificate.job_id)
    .where(Certificate.job_id == bindparam("job_id"), Certificate.subset == bindparam("subset"),
           Certificate.sample_index == bindparam("index"), Job.owner_id == bindparam("owner"))
)

#: The certificates of one subset of a job, in order (the job's ownership checked before).
SUBSET_READ: Select[Any] = (
    select(*CERTIFICATE_COLUMNS)
    .where(Certificate.job_id == bindparam("job_id"), Certificate.subset == bindparam("subset"))
    .order_by(Certificate.sample_index)
)


class _Compiled:
    """A statement in PostgreSQL's ``$n`` form and the order of its parameters."""

    def __init__(self, statement: Select[Any] | Any) -> None:
        compiled = statement.compile(dialect=PGDialect_asyncpg())
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())

    def args(self, values: Mapping[str, object]) -> list[object]:
        return [values[name] for name in self.names]


_CERTIFICATE, _KEY, _SUBSET = (
    _Compiled(CERTIFICATE_READ), _Compiled(KEY_READ), _Compiled(SUBSET_READ)
)


async def _unchanged(_connection: Any) -> None:
    """A pooled connection's reset: none. Its reads leave no session state (no prepared
    cursors, listeners, locks or settings), so asyncpg's default reset, one more round trip
    per read, would undo nothing."""


def available(settings: Settings) -> bool:
    """Whether ``settings`` name a PostgreSQL database (the only one this pool serves)."""
    return make_url(settings.resolved_database_url).get_backend_name() == "postgresql"


def _dsn(settings: Settings) -> str:
    """The libpq URL asyncpg takes for the service's SQLAlchemy URL (driver suffix dropped)."""
    url = make_url(settings.resolved_database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class FastReads:
    """The asyncpg pool of one API process (``RAB_READ_POOL_SIZE`` connections at most)."""

    def __init__(self, settings: Settings) -> None:
        self._dsn = _dsn(settings)
        self._size = settings.read_pool_size
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def _open(self) -> Any:
        import asyncpg

        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=1, max_size=self._size, timeout=5, reset=_unchanged,
                )
            return self._pool

    async def _fetch(self, compiled: _Compiled, values: Mapping[str, object],
                     one: bool = True) -> Any:
        """The first row (``one``) or every row of ``compiled`` with ``values``."""
        import asyncpg

        lost = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError, asyncpg.CannotConnectNowError)
        for attempt in (1, 2):
            try:
                pool = self._pool or await self._open()
                read = pool.fetchrow if one else pool.fetch
                return await read(compiled.sql, *compiled.args(values))
            except lost as exc:
                log.warning("fast reads: database connection lost (%s: %s)",
                            type(exc).__name__, exc)
                if attempt == 2:
                    await self.close()
                    raise ProblemError(
                        503, "Service Unavailable",
                        "the database is unreachable; try again shortly",
                        headers={"Retry-After": "5"},
                    ) from exc
        raise AssertionError("unreachable")

    async def certificate(self, job_id: str, subset: str, index: int, owner: str) -> Any:
        """The certificate row (a mapping by column name) or None."""
        return await self._fetch(
            _CERTIFICATE, {"job_id": job_id, "subset": subset, "index": index, "owner": owner}
        )

    async def subset(self, job_id: str, subset: str) -> list[Any]:
        """Every certificate row of ``subset`` of job ``job_id``, by sample index."""
        return list(await self._fetch(_SUBSET, {"job_id": job_id, "subset": subset}, one=False))

    async def key(self, digest: str) -> Any:
        """The unrevoked key with SHA-256 ``digest`` ((id, operator)) or None."""
        return await self._fetch(_KEY, {"digest": digest})

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()
