"""The workers' Celery application, built from the settings with the contract's
:func:`contract.messaging.make_celery` and registering the task modules ``workers.tasks`` and
``workers.partitions``.

The broker is Redis or RabbitMQ in production (``RAB_BROKER_URL``) and kombu's filesystem
transport in the embedded mode (no server). No result backend: the job row in SQL is the
source of truth. The worker's main process announces which queues it consumes
(``workers.presence``) from when it is ready until it shuts down.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery.signals import setup_logging, worker_init, worker_ready, worker_shutdown

from app.db import Database
from app.logs import configure_logging
from app.settings import get_settings
from contract.messaging import QUEUES, make_celery
from workers.presence import Presence

celery_app = make_celery(*get_settings().celery_broker(),
                         include=["workers.tasks", "workers.partitions"])
_presence: dict[str, Presence] = {}


@worker_init.connect
def _prepare_worker(**_: object) -> None:
    get_settings().ensure_broker_folders()


@setup_logging.connect
def _json_logs(loglevel: int | None = None, **_: object) -> None:
    """Celery leaves logging to this handler: JSON lines (``app.logs``), as the API's, at the
    worker's ``--loglevel``."""
    configure_logging(loglevel or logging.INFO)


@worker_ready.connect
def _announce(sender: Any = None, **_: object) -> None:
    try:
        queues = list(sender.app.amqp.queues.consume_from)  # the worker's -Q
    except AttributeError:
        queues = list(QUEUES)
    presence = Presence(Database(get_settings()), f"{socket.gethostname()}:{os.getpid()}", queues)
    presence.start()
    _presence["main"] = presence


@worker_shutdown.connect
def _withdraw(**_: object) -> None:
    presence = _presence.pop("main", None)
    if presence is not None:
        presence.stop()
