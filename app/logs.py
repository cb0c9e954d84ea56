"""Structured logs: one JSON object per line, from the API and the workers alike.

Every line carries the context of the work it belongs to: in the API the request id (made
here for each request and returned as ``X-Request-ID``), the calling key's id and the job id
once known; in a worker the job id (``workers.tasks`` binds it). Lines of other libraries
(uvicorn, Celery, SQLAlchemy) go through the same formatter, so they are JSON with the same
context too.

A request's context is one mutable dict in a ``ContextVar``: FastAPI runs dependencies and
handlers in copies of the request's context (thread pool), where a new binding would not be
seen by the request's later lines, but a change to the shared dict is.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from contextvars import ContextVar
from typing import Any

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_request_context: ContextVar[dict[str, Any] | None] = ContextVar("rab_request", default=None)
log = structlog.get_logger("rab.requests")


def bind_request_context(**values: Any) -> None:
    """Add ``values`` (e.g. ``key_id``, ``job_id``) to every later log line of this request
    (no-op outside a request)."""
    context = _request_context.get()
    if context is not None:
        context.update(values)


def _merge_request_context(
    _logger: Any, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    for key, value in (_request_context.get() or {}).items():
        event.setdefault(key, value)
    return event


_CONTEXT: tuple[structlog.typing.Processor, ...] = (
    structlog.contextvars.merge_contextvars,  # a worker's job id
    _merge_request_context,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
)


class _JsonHandler(logging.StreamHandler):
    """The handler ``configure_logging`` installs (and replaces when called again; other
    handlers on the root logger, e.g. a test runner's, are left alone)."""


def configure_logging(level: int = logging.INFO) -> None:
    """Send every logger's records, as JSON lines, to stderr (idempotent).

    uvicorn's own handlers are removed so its lines are JSON too (call this after uvicorn set
    up its logging, or run it with ``log_config=None``); its access log is muted because
    :class:`RequestLogMiddleware` writes one richer line per request.
    """
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=list(_CONTEXT),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = _JsonHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _JsonHandler)] + [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings too, not as bare stderr text
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    structlog.configure(
        processors=[*_CONTEXT, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


#: Request ids: 128 random bits from a generator seeded once from the OS, not a system call per
#: request (``uuid.uuid4``'s os.urandom was a measurable share of a cached read's cost); they
#: label log lines, nothing depends on their unpredictability.
_REQUEST_IDS = random.Random()


class RequestLogMiddleware:
    """Gives each HTTP request an id (``X-Request-ID`` on the response, ``request_id`` on its
    log lines) and logs one line per request as its answer starts: method, path, status,
    duration until then, key and the ids in the path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"{_REQUEST_IDS.getrandbits(128):032x}"
        # set, never reset: the request's task ends with it, and the server's own line about
        # an unhandled error (logged after this middleware) still names the request
        _request_context.set({"request_id": request_id})
        start = time.perf_counter()
        status, logged = 500, False

        def log_request() -> None:
            nonlocal logged
            logged = True
            ids = {k: v for k, v in scope.get("path_params", {}).items() if k.endswith("_id")}
            bind_request_context(**ids)
            log.info(
                "request", method=scope["method"], path=scope["path"], status=status,
                duration_ms=round(1000 * (time.perf_counter() - start), 1),
            )

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
                log_request()  # before any byte: a client that has the answer has the line
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not logged:  # no answer started: an unhandled error (answered further out)
                log_request()
