"""/healthz (the process answers), /readyz (public: ready or not, nothing more) and
/readyz/details (operator keys: each check, with its error)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.deps import Operator
from app.migrate import current_revision, head_revision
from app.queues import queue_states, unserved

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)
_NOT_READY: dict[int | str, dict[str, Any]] = {503: {"description": "Not ready."}}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the API process is serving requests."""
    return {"status": "ok"}


def _checks(request: Request) -> dict[str, str]:
    """Database, migrations at head, a live worker for every queue where work waits, and the
    broker: "ok" or what is wrong (errors logged)."""
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        with state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = current_revision(state.db.engine), head_revision(state.settings)
        checks["database"] = "ok"
        checks["migrations"] = "ok" if current == head else f"at {current}, head is {head}"
    except Exception as exc:
        checks["database"] = f"error: {exc}"
        checks["migrations"] = "unknown"
    try:
        with state.db.session() as session:
            waiting = unserved(queue_states(session))
        checks["workers"] = "ok" if not waiting else (
            "no worker consumes queue " + ", ".join(waiting) + ", where work waits"
        )
    except Exception as exc:
        checks["workers"] = f"error: {exc}"
    try:
        with state.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {exc}"
    failed = {name: v for name, v in checks.items() if v != "ok"}
    if failed:
        log.warning("not ready: %s", failed)
    return checks


def _answer(checks: dict[str, str], detailed: bool) -> JSONResponse:
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"ready": ready}
    if detailed:
        body["checks"] = checks
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/readyz", responses=_NOT_READY)
def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when the database answers at the head revision, every queue where work
    waits has a live worker and the broker connects; the body says only
    ``{"ready": true|false}`` (details: ``/readyz/details``)."""
    return _answer(_checks(request), detailed=False)


@router.get(
    "/readyz/details",
    responses={**_NOT_READY, 401: {"description": "No valid key."},
               403: {"description": "Not an operator key."}},
)
def readyz_details(request: Request, _operator: Operator) -> JSONResponse:
    """Readiness with each check and its error (operator keys only: errors name hosts)."""
    return _answer(_checks(request), detailed=True)
