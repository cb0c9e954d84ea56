"""Prometheus metrics: HTTP request counts and latencies of this API process, and job/dataset
counts and per-queue gauges (consumers, pending and running units, oldest wait, expired
leases) read from the database at scrape time (so they agree across processes and
restarts). ``GET /metrics`` needs an operator key (``X-API-Key``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from app.db import Database
from app.deps import Operator
from app.orm import Dataset, Job
from app.queues import queue_states
from contract.api import JOB_STATES


class _DatabaseCollector(Collector):
    """Jobs per state and datasets, counted in SQL at each scrape."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        db: Database | None = getattr(self._app.state, "db", None)
        if db is None:
            return
        jobs = GaugeMetricFamily("rab_jobs", "Jobs by state.", labels=["state"])
        with db.session() as session:
            by_state = select(Job.state, func.count()).group_by(Job.state)
            counts = {state: n for state, n in session.execute(by_state).all()}
            datasets = session.scalar(select(func.count()).select_from(Dataset)) or 0
            queues = queue_states(session)
        for state in JOB_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily("rab_datasets", "Stored datasets (all keys).", value=datasets)
        gauges = {
            "rab_queue_consumers": ("Live workers consuming the queue.", "consumers"),
            "rab_queue_pending_units": ("Units of work waiting on the queue.", "pending"),
            "rab_queue_running_units": ("Units of work running from the queue.", "running"),
            "rab_queue_expired_leases": ("Running units whose lease expired.", "expired_leases"),
            "rab_queue_oldest_pending_seconds": ("Wait of the oldest pending unit.",
                                                 "oldest_pending_s"),
        }
        for name, (doc, field) in gauges.items():
            family = GaugeMetricFamily(name, doc, labels=["queue"])
            for queue in queues:
                family.add_metric([queue.queue], getattr(queue, field) or 0.0)
            yield family


def install_metrics(app: FastAPI) -> None:
    """Add the request-timing middleware and GET /metrics."""
    registry = CollectorRegistry()
    requests = Counter(
        "rab_http_requests", "HTTP requests.", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "rab_http_request_seconds", "HTTP request latency.", ["method", "route"],
        registry=registry,
    )
    registry.register(_DatabaseCollector(app))

    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        latency.labels(request.method, route).observe(time.perf_counter() - start)
        requests.labels(request.method, route, str(response.status_code)).inc()
        return response

    @app.get(
        "/metrics", tags=["operations"], response_class=Response,
        responses={401: {"description": "No valid key."},
                   403: {"description": "Not an operator key."}},
    )
    def metrics(_operator: Operator) -> Response:
        """Prometheus text exposition (operator keys only: it counts every key's work)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
