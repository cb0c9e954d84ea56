"""A lone certify request's message, sent ahead of its submission (PostgreSQL).

A certify request whose inputs are small sends one message that carries them
(``app.units.certify_message``); an idle worker with the model hot certifies them before any
claim (``workers.tasks``). Sent after the submission's statement committed
(``app.submissions``), the message waited for that statement's round trip (1.5 ms of a
sequential request's 11, measured) before the worker could start. A *lone* request sends it
first, and its worker computes while the API commits the job:

- Lone: no other certify request for the same model in flight in this API process, and
  none of the requests of the model's last busy spell here (a time with some in flight)
  overlapped another; small inputs, on PostgreSQL (SQLite, the embedded default, sends every
  message after its commit); and its key's last submission in this process not refused by
  the job quota (a refused job never exists: its message would cost the worker the wait
  below for nothing; one refusal marks the key until a submission of it is taken). Under
  load a burst of requests shares one message (``app.certify_queue``) and the worker claims
  them in batches, so a message sent ahead would be one more for it to drop. The last spell
  counts because a batch answers its requests together: right after it, none is in flight,
  and the first request of the next burst would pass for a lone one (at 32 clients one per
  batch did, measured: 35 messages in 4 s instead of 6, 134 against 157 req/s side by side).
- The worker, given a message that carries inputs and finding no job row for it (the
  success of an unclaimed job, or a claim, that finds none), looks for the row again, with a
  short backoff, until ``RAB_CERTIFY_AHEAD_WAIT_S`` after it began serving the message (so
  at least that long after the message was sent); a job that appears by then is served as if
  its message had come after its commit, one that does not leaves its message dropped.
- The API times the send and the statement together: when they took more than half that
  wait and the statement found no other job to cover it, it sends the message again once the
  job is committed (as it would have without sending ahead). Otherwise the commit came less
  than half the wait after the send, so before the worker's last look, which comes at least
  the whole wait after the message was sent (it reached the worker after it was sent): a
  job whose message went ahead is never left without one. The factor two leaves a margin
  for the two machines' clocks. A duplicate message is harmless, as every message is: it
  finds the job finished (dropped unread where the same worker finished it,
  ``workers.tasks._finished_here``), claimed or cancelled.

A covered job (``app.certify_queue``) whose message went ahead has one message more than it
needs: it finds the job claimed with its cover's batch, or certifies it unclaimed before the
cover's worker comes to it. Either is what a duplicate does. So the one-message-per-burst
argument holds as it is: it asks only that a job not covered gets a message that a worker
serves after the job's commit, and the worker's look until the wait's end gives an early
message exactly that.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["AheadSending"]

#: The most models whose last busy spell was crowded an API process remembers.
_MODELS_KEPT = 4096


class AheadSending:
    """One per API process: which certify requests may send their message ahead of their
    submission (see the module's docstring). ``wait_s``: ``RAB_CERTIFY_AHEAD_WAIT_S``, the
    worker's wait for a job whose message came first; 0 sends none ahead."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self._in_flight: Counter[str] = Counter()  # certify requests by model
        self._crowded: set[str] = set()  # models whose busy spell here had two at once
        self._last_crowded: set[str] = set()  # ... and whose last one had
        self._refused: set[str] = set()  # keys whose last submission here was refused
        self._lock = threading.Lock()  # the submissions run in the thread pool

    @contextmanager
    def request(self, owner: str, model_id: str) -> Iterator[bool]:
        """A certify request of ``owner`` for ``model_id`` in flight for the block: whether
        it may send its message ahead (none other for the model in flight here, nor two at
        once in its last busy spell; the key not marked as refused)."""
        with self._lock:
            in_flight = self._in_flight[model_id]
            lone = (self.wait_s > 0 and not in_flight and model_id not in self._last_crowded
                    and owner not in self._refused)
            if in_flight:
                self._crowded.add(model_id)
            self._in_flight[model_id] = in_flight + 1
        try:
            yield lone
        finally:
            with self._lock:
                self._in_flight[model_id] -= 1
                if not self._in_flight[model_id]:  # the spell is over
                    del self._in_flight[model_id]
                    if model_id in self._crowded:
                        self._crowded.discard(model_id)
                        if len(self._last_crowded) >= _MODELS_KEPT:  # bounded: then one
                            self._last_crowded.clear()  # request each may go ahead
                        self._last_crowded.add(model_id)
                    else:
                        self._last_crowded.discard(model_id)

    def submitted(self, owner: str, taken: bool) -> None:
        """Record whether a submission of ``owner`` was ``taken`` (else the quota refused it)."""
        with self._lock:
            if taken:
                self._refused.discard(owner)
            else:
                self._refused.add(owner)

    def late(self, elapsed_s: float) -> bool:
        """Whether a send and a statement that took ``elapsed_s`` together need the message
        sent again after the commit: more than half the worker's wait."""
        return elapsed_s > self.wait_s / 2
