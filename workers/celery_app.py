"""The workers' Celery application, built from the settings with the contract's
:func:`contract.messaging.make_celery` and registering the task module ``workers.tasks``.

The broker is Redis or RabbitMQ in production (``RAB_BROKER_URL``) and kombu's filesystem
transport in the embedded mode (no server). No result backend: the job row in SQL is the
source of truth.
"""

from __future__ import annotations

import logging

from celery.signals import setup_logging, worker_init

from app.logs import configure_logging
from app.settings import get_settings
from contract.messaging import make_celery

celery_app = make_celery(*get_settings().celery_broker(), include=["workers.tasks"])


@worker_init.connect
def _prepare_worker(**_: object) -> None:
    get_settings().ensure_broker_folders()


@setup_logging.connect
def _json_logs(loglevel: int | None = None, **_: object) -> None:
    """Celery leaves logging to this handler: JSON lines (``app.logs``), as the API's, at the
    worker's ``--loglevel``."""
    configure_logging(loglevel or logging.INFO)
