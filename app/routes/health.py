"""/healthz (the process answers) and /readyz (database, broker, migrations at head, and a
worker for every queue where work waits)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.migrate import current_revision, head_revision
from app.queues import queue_states, unserved

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the API process is serving requests."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: a check failed (the body names it)."}},
)
def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when the database answers at the head revision, the broker connects and
    every queue where work waits has a live worker."""
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
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
