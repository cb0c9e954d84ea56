"""Task names, queues and the one routing table of the service's messages.

The API sends tasks by name (it never imports task code), the workers register them under the
same names; both build their Celery app with :func:`make_celery` from the broker settings they
were given. K-NN work is numpy and runs on the ``cpu`` queue; ensembles and partition
aggregation train and vote on the ``gpu`` queue (a GPU worker where one exists).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

KNN_TASK = "rab.jobs.knn"
ENSEMBLE_CHUNK_TASK = "rab.jobs.ensemble_chunk"
ENSEMBLE_AGGREGATE_TASK = "rab.jobs.ensemble_aggregate"
PARTITION_CHUNK_TASK = "rab.jobs.partition_chunk"
PARTITION_AGGREGATE_TASK = "rab.jobs.partition_aggregate"
CERTIFY_TASK = "rab.jobs.certify_inputs"
QUEUES: tuple[str, ...] = ("cpu", "gpu")
#: The queue of every evaluation method's work.
QUEUE_OF_METHOD: dict[str, str] = {"knn": "cpu", "ensemble": "gpu", "partition": "gpu"}
#: The queue of every task whose queue does not depend on the job (certify: the model's method).
ROUTES: dict[str, str] = {
    KNN_TASK: QUEUE_OF_METHOD["knn"],
    ENSEMBLE_CHUNK_TASK: QUEUE_OF_METHOD["ensemble"],
    ENSEMBLE_AGGREGATE_TASK: QUEUE_OF_METHOD["ensemble"],
    PARTITION_CHUNK_TASK: QUEUE_OF_METHOD["partition"],
    PARTITION_AGGREGATE_TASK: QUEUE_OF_METHOD["partition"],
}


def queue_for(task: str, method: str) -> str:
    """The queue a ``task`` of a job of ``method`` goes to."""
    return ROUTES.get(task, QUEUE_OF_METHOD[method])


def make_celery(
    broker_url: str, transport_options: dict[str, Any], include: Sequence[str] = ()
) -> Celery:
    """A Celery app for ``broker_url``: JSON only, late acks, prefetch 1, no result backend
    (the job row in SQL is the source of truth); ``include`` names the task modules (the
    workers'; the API sends by name and includes none).

    The (disabled) result backend is shared by all threads: made per thread by default, each
    time by a scan of every installed package's entry points, it cost the API tens of ms of CPU
    for each new thread of its pool, which grows with the load and lets threads idle for 10 s
    go (measured: 8 % of the API's CPU in the first 18 s of 32 clients)."""
    from celery import Celery
    from kombu import Queue

    app = Celery("rab", broker=broker_url, include=list(include))
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=QUEUES[0],
        task_routes={task: {"queue": queue} for task, queue in ROUTES.items()},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        result_backend_thread_safe=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app
