"""A worker's presence row (``worker_presence``): written when the worker is ready, renewed
every ``PRESENCE_INTERVAL_S`` from a thread of its main process, deleted at a warm shutdown.
A killed worker simply stops renewing it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from app.db import Database
from app.orm import WorkerPresence, utcnow
from app.queues import PRESENCE_INTERVAL_S

log = logging.getLogger(__name__)


class Presence:
    """Keeps ``worker_id``'s row, with the ``queues`` it consumes, fresh until stopped."""

    def __init__(self, db: Database, worker_id: str, queues: Iterable[str]) -> None:
        self.db, self.worker_id, self.queues = db, worker_id, sorted(queues)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)

    def _beat(self) -> None:
        with self.db.session() as session:
            row = session.get(WorkerPresence, self.worker_id)
            if row is None:
                session.add(WorkerPresence(id=self.worker_id, queues=self.queues))
            else:
                row.queues, row.last_seen = self.queues, utcnow()

    def _run(self) -> None:
        while True:
            try:
                self._beat()
            except Exception as exc:  # the database may be away: try again at the next beat
                log.warning("presence of %s not renewed: %s", self.worker_id, exc)
            if self._stop.wait(PRESENCE_INTERVAL_S):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and remove the row (a warm shutdown)."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            with self.db.session() as session:
                row = session.get(WorkerPresence, self.worker_id)
                if row is not None:
                    session.delete(row)
        except Exception as exc:
            log.warning("presence of %s not removed: %s", self.worker_id, exc)
