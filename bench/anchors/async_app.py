"""Anchor: ``GET /v1/jobs/{id}/certificates/{index}`` with asyncpg (a pool of 10 to 40) and
orjson in an ``async def`` route, nothing else (``ANCHOR_DATABASE_URL``, a SQLAlchemy URL whose
driver suffix is dropped). ``uvicorn --app-dir bench/anchors async_app:app``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import orjson
from fastapi import FastAPI, Header, HTTPException, Response
from queries import CERTIFICATE_SQL, KEY_SQL, PATH, certificate, key_hash

DSN = os.environ["ANCHOR_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
KEY = KEY_SQL.format("$1")
CERTIFICATE = CERTIFICATE_SQL.format("$1", "$2", "$3")
pools: dict[str, asyncpg.Pool] = {}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    pools["db"] = await asyncpg.create_pool(DSN, min_size=10, max_size=40)
    try:
        yield
    finally:
        await pools.pop("db").close()


app = FastAPI(lifespan=lifespan)


@app.get(PATH)
async def get_certificate(job_id: str, index: int, x_api_key: str = Header()) -> Response:
    async with pools["db"].acquire() as conn:
        owner = await conn.fetchval(KEY, key_hash(x_api_key))
        if owner is None:
            raise HTTPException(401)
        row = await conn.fetchrow(CERTIFICATE, job_id, index, owner)
    if row is None:
        raise HTTPException(404)
    return Response(orjson.dumps(certificate(dict(row))), media_type="application/json")
