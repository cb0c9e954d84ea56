"""The service's Celery app (``contract.messaging.make_celery``): what it costs a sender."""

from __future__ import annotations

import threading

from contract.messaging import make_celery


def test_one_result_backend_serves_every_thread() -> None:
    """Sending a task from a new thread of the API's pool builds no backend of its own (each
    build scans every installed package's entry points)."""
    app = make_celery("memory://", {})
    backends = [app.backend]
    threads = [threading.Thread(target=lambda: backends.append(app.backend)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(backends) == 4 and all(b is backends[0] for b in backends)
