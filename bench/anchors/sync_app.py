"""Anchor: ``GET /v1/jobs/{id}/certificates/{index}`` with sync SQLAlchemy (psycopg, the
service's pool size) in a plain ``def`` route, nothing else (``ANCHOR_DATABASE_URL``, a
SQLAlchemy URL). ``uvicorn --app-dir bench/anchors sync_app:app``."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Header, HTTPException
from queries import CERTIFICATE_SQL, KEY_SQL, PATH, certificate, key_hash
from sqlalchemy import create_engine, text

engine = create_engine(os.environ["ANCHOR_DATABASE_URL"], pool_size=10, max_overflow=30)
KEY = text(KEY_SQL.format(":h"))
CERTIFICATE = text(CERTIFICATE_SQL.format(":job", ":index", ":owner"))
app = FastAPI()


@app.get(PATH)
def get_certificate(job_id: str, index: int, x_api_key: str = Header()) -> dict[str, Any]:
    with engine.connect() as conn:
        owner = conn.execute(KEY, {"h": key_hash(x_api_key)}).scalar()
        if owner is None:
            raise HTTPException(401)
        row = conn.execute(
            CERTIFICATE, {"job": job_id, "index": index, "owner": owner}
        ).mappings().first()
    if row is None:
        raise HTTPException(404)
    return certificate(dict(row))
