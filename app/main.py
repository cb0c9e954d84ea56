"""The FastAPI application factory (``uvicorn --factory app.main:create_app``)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from app import fastreads
from app.ahead import AheadSending
from app.auth import KeyCache
from app.dashboard import install_dashboard
from app.db import Database
from app.docs import install_docs
from app.fastreads import FastReads
from app.logs import RequestLogMiddleware, configure_logging
from app.migrate import upgrade
from app.observability import install_metrics
from app.openapi import install_openapi, operation_id
from app.problems import install_problem_handlers
from app.replies import Signals
from app.routes import datasets, health, jobs, models, queues
from app.settings import Settings, get_settings
from app.units import reap
from app.upkeep import upkeep
from app.uploads import BoundedBodies
from contract.messaging import make_celery
from rab import __version__

log = logging.getLogger(__name__)
DESCRIPTION = """Certified robustness against backdoor attacks (RAB) as a service.

Every resource belongs to the API key (header `X-API-Key`) that created it; other keys get 404.
Errors are `application/problem+json` documents."""


async def _every(interval_s: float, step: partial[Any]) -> None:
    """``step`` in a worker thread at start-up and every ``interval_s``; a database or broker
    that is away is tried again at the next round."""
    while True:
        try:
            await run_in_threadpool(step)
        except Exception as exc:
            log.warning("%s: %s: %s", step.func.__name__, type(exc).__name__, exc)
        await asyncio.sleep(interval_s)


def _freeze_start_up() -> None:
    """Once per process, after the first start-up: what it built lives as long as the process,
    so it is moved out of the garbage collector's sight (``gc.freeze``) and a full collection
    no longer walks it (~180k objects, 150 ms measured: every such pause was in the tail of
    the reads' latency). Later apps in the same process (tests) are collected as usual."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API, wired to the database, store and broker of ``settings``.

    Start-up upgrades the database to the newest migration before serving.
    """
    settings = settings or get_settings()
    configure_logging()  # a factory uvicorn calls after setting up its own logging

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade(settings)
        settings.ensure_broker_folders()
        app.state.settings = settings
        app.state.db = Database(settings)
        app.state.store = settings.open_store()
        app.state.celery = make_celery(*settings.celery_broker())
        app.state.keys = keys = KeyCache(settings.key_cache_ttl_s)
        app.state.reads = FastReads(settings) if fastreads.available(settings) else None
        app.state.signals = signals = Signals(settings, keys)
        app.state.ahead = AheadSending(settings.certify_ahead_wait_s)
        # the reaper (app.units.reap) and the tables' upkeep (app.upkeep.upkeep)
        maintenance = [
            asyncio.create_task(_every(settings.reap_interval_s, partial(
                reap, app.state.db, app.state.celery, resend_after_s=settings.resend_after_s))),
            asyncio.create_task(_every(settings.upkeep_interval_s, partial(
                upkeep, app.state.db, settings.upkeep_rows))),
        ]
        subscriber = asyncio.create_task(signals.run())
        _freeze_start_up()
        try:
            yield
        finally:
            for task in maintenance:
                task.cancel()
            subscriber.cancel()
            await signals.close()
            if app.state.reads is not None:
                await app.state.reads.close()
            app.state.db.engine.dispose()

    app = FastAPI(
        title="rab-certify", version=__version__, description=DESCRIPTION, lifespan=lifespan,
        docs_url=None, redoc_url=None, generate_unique_id_function=operation_id,
    )
    install_problem_handlers(app)
    app.add_middleware(
        BoundedBodies, max_bytes=settings.max_json_bytes, openapi=lambda: app.openapi()
    )
    install_openapi(app)
    install_docs(app)
    install_dashboard(app)
    install_metrics(app)
    app.add_middleware(RequestLogMiddleware)  # outermost: its request id covers everything
    # Starlette tries routes in order: the jobs' (the hot certificate reads) first
    for router in (jobs.router, models.router, datasets.router, health.router, queues.router):
        app.include_router(router)
    return app
