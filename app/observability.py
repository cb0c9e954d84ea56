"""Prometheus metrics: HTTP request counts and latencies of this API process, and job/dataset
counts and per-queue gauges (consumers, pending and running units, oldest wait, expired
leases) read from the database at scrape time (so they agree across processes and
restarts). ``GET /metrics`` needs an operator key (``X-API-Key``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import FastAPI, Response
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class _Measure:
    """Counts and times every HTTP request by route and status (a plain ASGI middleware:
    no copy of the response, no extra task per request)."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app, self._requests, self._latency = app, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self._latency.labels(scope["method"], route).observe(time.perf_counter() - start)
            self._requests.labels(scope["method"], route, str(status)).inc()


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

    app.add_middleware(_Measure, requests=requests, latency=latency)

    @app.get(
        "/metrics", tags=["operations"], response_class=Response,
        responses={401: {"description": "No valid key."},
                   403: {"description": "Not an operator key."}},
    )
    def metrics(_operator: Operator) -> Response:
        """Prometheus text exposition (operator keys only: it counts every key's work)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
