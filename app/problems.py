"""Errors as RFC 9457 ``application/problem+json`` documents."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)


class Problem(BaseModel):
    """An error (RFC 9457): what went wrong, for a person (``detail``) and a program
    (``status``; ``errors`` lists each invalid field of a rejected request)."""

    type: str = Field(default="about:blank", examples=["about:blank"])
    title: str = Field(examples=["Invalid input"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["inputs contain NaN or infinite values"])
    instance: str | None = Field(default=None, examples=["/v1/models/4f1c/certify"])
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Per-field errors of a request that failed validation."
    )


class ProblemError(Exception):
    """An error answered with a problem document: ``status``, ``title`` and a ``detail``."""

    def __init__(
        self, status: int, title: str, detail: str,
        headers: Mapping[str, str] | None = None, **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def not_found(what: str, ident: str) -> ProblemError:
    """404 for a resource that does not exist or belongs to another key."""
    return ProblemError(404, "Not Found", f"no {what} with id {ident!r}")


def bad_input(detail: str, **extra: Any) -> ProblemError:
    """422 for input that is well-formed HTTP but unusable."""
    return ProblemError(422, "Invalid input", detail, **extra)


def problem_response(
    status: int, title: str, detail: str, instance: str | None = None,
    headers: Mapping[str, str] | None = None, **extra: Any,
) -> JSONResponse:
    """A ``application/problem+json`` response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error (ours, FastAPI's validation, Starlette's HTTP, and any unexpected
    exception, logged with its traceback) as problem+json."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, request.url.path,
                                headers=exc.headers, **exc.extra)

    @app.exception_handler(OperationalError)
    async def _database_away(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unreachable: %s", exc.orig)
        response = problem_response(
            503, "Service Unavailable", "the database is unreachable; try again shortly",
            request.url.path,
        )
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem_response(422, "Invalid request", detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed", 401: "Unauthorized"}.get(
            exc.status_code, "HTTP error"
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(app, request))
        return problem_response(
            exc.status_code, title, str(exc.detail), request.url.path, headers=headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        detail = "an unexpected error occurred; it was logged (nothing was changed by it)"
        # the server closes the connection after an unhandled error: say so, so that a
        # keep-alive client opens a new one instead of meeting a reset
        return problem_response(
            500, "Internal Server Error", detail, request.url.path, headers={"Connection": "close"}
        )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """The methods some route answers at the request's path (the ``Allow`` of a 405)."""
    return [
        method for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in app.router.routes
        )
    ]
