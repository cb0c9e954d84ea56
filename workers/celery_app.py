"""The Celery application: ``cpu`` and ``gpu`` queues, late acks, prefetch 1.

The broker is Redis in production (``RAB_BROKER_URL``) and kombu's filesystem transport in the
embedded mode (no server). No result backend: the job row in SQL is the source of truth.
Tasks are sent by name, so the API imports this module without importing any task code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_init
from kombu import Queue

from app.settings import Settings, get_settings

KNN_TASK = "rab.jobs.knn"
ENSEMBLE_CHUNK_TASK = "rab.jobs.ensemble_chunk"
ENSEMBLE_AGGREGATE_TASK = "rab.jobs.ensemble_aggregate"
CERTIFY_TASK = "rab.jobs.certify_inputs"
QUEUES = ("cpu", "gpu")
QUEUE_OF = {"knn": "cpu", "ensemble": "gpu"}  # K-NN is numpy; ensembles train and vote on a GPU


def _folders(settings: Settings) -> tuple[Path, Path]:
    return settings.broker_folder / "queue", settings.broker_folder / "control"


def ensure_broker_folders(settings: Settings) -> None:
    """Create the embedded transport's folders (done at start-up, not at import)."""
    if settings.embedded_broker:
        for folder in _folders(settings):
            folder.mkdir(parents=True, exist_ok=True)


def _broker(settings: Settings) -> tuple[str, dict[str, Any]]:
    if settings.embedded_broker:
        queue_dir, control_dir = _folders(settings)
        return "filesystem://", {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(control_dir),
            "store_processed": False,
            # kombu polls the folder once a second by default, which caps the embedded mode at
            # about one task a second; a directory listing every 0.1 s costs next to nothing.
            "polling_interval": 0.1,
        }
    assert settings.broker_url is not None
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.broker_key_prefix:
        options["global_keyprefix"] = settings.broker_key_prefix
    return settings.broker_url, {**options, **settings.broker_transport_options}


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings``."""
    broker_url, transport_options = _broker(settings)
    app = Celery("rab", broker=broker_url, include=["workers.tasks"])
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
        task_routes={
            KNN_TASK: {"queue": "cpu"},
            ENSEMBLE_CHUNK_TASK: {"queue": "gpu"},
            ENSEMBLE_AGGREGATE_TASK: {"queue": "gpu"},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


celery_app = make_celery(get_settings())


@worker_init.connect
def _prepare_worker(**_: object) -> None:
    ensure_broker_folders(get_settings())
