"""Signals over Redis pub/sub: a job reaching a terminal state wakes the API request that waits
for it (``POST /v1/models/{id}/certify``), and a revoked API key leaves every API process's key
cache (``app.auth.KeyCache``) at once.

Why Redis pub/sub: a production deployment runs Redis already (the usual broker), a publish is
one round trip, and each API process needs a single subscribed connection for every waiting
request and every revocation. PostgreSQL LISTEN/NOTIFY would tie each API process to a
connection outside the pool and does not exist on SQLite; a Celery result backend would store a
result per task beside the job row, which already is the result.

The job row stays the truth (provenance, idempotency, ``GET /v1/jobs/{id}``); a signal is only
a wake-up, published after the row is committed (``publish_job``, called by the workers and by
a cancellation), so a woken request always finds the final row. No wake-up is lost: a request
registers its job id (:meth:`Signals.expect`) before the job is submitted, on a subscription
that was confirmed earlier; a subscription that breaks wakes every waiter, which then reads its
row, and while none is confirmed (Redis down, or still connecting) waiters poll the row. Even
with a live subscription a waiter reads its row every ``RECHECK_S`` (a worker that could not
reach Redis costs that much latency, never a hang) and once more at its deadline.

Without Redis (the embedded mode: SQLite, the filesystem broker and the local worker process
share nothing but files; or a RabbitMQ broker) a waiting request polls the job row from 5 ms,
1.5 times less often each time, up to every 0.2 s: a read of the local SQLite file costs
microseconds, and the embedded mode has no server that could carry a signal. Its key cache is
off, since a revocation would not be heard.

A certify job's signal carries its certificates as well (up to
:data:`SIGNAL_CERTIFICATES_MAX`, as JSON, exactly the rows its success committed): its request
answers from them, without reading them back (a read per request was an eighth of the API's
CPU at 32 clients, and 0.4 ms of a sequential request, measured). A signal without them (a
larger job, another state, an older worker) is answered from the rows, as before.

Channels (under ``RAB_BROKER_KEY_PREFIX``): ``rab:jobs`` carries ``"<job id> <state>"`` or
``"<job id> succeeded <certificates as JSON>"``, ``rab:keys`` the id of a revoked key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import redis
import redis.asyncio

from app.auth import KeyCache
from app.orm import Certificate
from app.settings import Settings

log = logging.getLogger(__name__)
JOBS, KEYS = "rab:jobs", "rab:keys"
FIRST_POLL_S, LAST_POLL_S = 0.005, 0.2  # polling: look soon, then less and less often
RECHECK_S = 1.0  # a signalled waiter reads its row this often all the same
CONNECT_TIMEOUT_S = 1.0
RETRY_S = (0.5, 5.0)  # reconnection backoff of the subscriber: first and longest pause
#: The most certificates a job's success signal carries (beyond, its request reads them).
SIGNAL_CERTIFICATES_MAX = 64
#: The columns of a certificate a signal carries: all but its job's id (the signal's).
_SIGNALLED_COLUMNS = tuple(c.name for c in Certificate.__table__.columns if c.name != "job_id")


def channel(settings: Settings, name: str) -> str:
    """The channel ``name`` of this deployment (its key prefix first)."""
    return f"{settings.broker_key_prefix}{name}"


class Publisher:
    """Publishes signals from any thread (a worker, the CLI, a sync route) over one connection
    pool; an unreachable Redis is logged once (until it is back), never raised: the rows are
    committed already and a waiter finds them by reading."""

    def __init__(self, settings: Settings, url: str) -> None:
        self._settings = settings
        self._redis = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
        )
        self._failing = False

    def publish(self, name: str, *payloads: str) -> bool:
        """Publish each of ``payloads`` on channel ``name``, in order and in one round trip (a
        pipeline); False if Redis could not be reached."""
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for payload in payloads:
                    pipe.publish(channel(self._settings, name), payload)
                pipe.execute()
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("signals: Redis unreachable (%s); waiters will read the rows", exc)
            self._failing = True
            return False
        if self._failing:
            log.info("signals: Redis reachable again")
        self._failing = False
        return True


_publishers: dict[tuple[str, str], Publisher] = {}
_publishers_lock = threading.Lock()


def publisher(settings: Settings) -> Publisher | None:
    """This process's publisher for the Redis of ``settings`` (None without one)."""
    url = settings.resolved_redis_url
    if url is None:
        return None
    with _publishers_lock:
        key = (url, settings.broker_key_prefix)
        if key not in _publishers:
            _publishers[key] = Publisher(settings, url)
        return _publishers[key]


def publish_job(settings: Settings, job_id: str, state: str, *more_job_ids: str,
                certificates: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> None:
    """Announce that job ``job_id`` (and ``more_job_ids``: a batch) reached ``state`` (call
    after committing it); ``certificates``: the rows just committed of the certify jobs among
    them, by job id (each signal carries its job's, up to :data:`SIGNAL_CERTIFICATES_MAX`)."""
    sender = publisher(settings)
    if sender is not None:
        sender.publish(JOBS, *(_payload(job, state, (certificates or {}).get(job))
                               for job in (job_id, *more_job_ids)))


def _payload(job_id: str, state: str, rows: Sequence[Mapping[str, Any]] | None) -> str:
    if rows is None or len(rows) > SIGNAL_CERTIFICATES_MAX:
        return f"{job_id} {state}"
    carried = [{name: row.get(name) for name in _SIGNALLED_COLUMNS} for row in rows]
    return f"{job_id} {state} {json.dumps(carried, separators=(',', ':'))}"


def publish_key_revoked(settings: Settings, key_id: str) -> bool:
    """Announce that key ``key_id`` was revoked (after committing it); False if it may not
    have been heard (then API processes may trust it for up to ``RAB_KEY_CACHE_TTL_S``)."""
    sender = publisher(settings)
    return True if sender is None else sender.publish(KEYS, key_id)


class Waiter:
    """One request waiting for one job: woken by its signal, a lost subscription or a
    re-check period; polls while no subscription is confirmed."""

    def __init__(self, signals: Signals) -> None:
        self._signals = signals
        self.woken = asyncio.Event()
        self.state: str | None = None  # the terminal state a signal announced
        #: the certificates its success signal carried (app.replies' docstring), in order
        self.certificates: list[dict[str, Any]] | None = None
        self.via = "poll"  # how the wait ended: signal, poll (a read found it) or deadline
        # the subscription trusted from registration on (None: none confirmed, poll)
        self._heard = signals.epoch if signals.live else None

    async def wait(self, deadline: float, check: Callable[[], Awaitable[str | None]]) -> str | None:
        """The job's terminal state, from its signal or from ``check()`` (which reads the row
        and releases its connection; None while not finished); None at ``deadline``
        (``time.monotonic()``), after a last ``check()``."""
        signals, pause, heard = self._signals, FIRST_POLL_S, self._heard
        while self.state is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.via = "deadline"
                return await check()
            if signals.live and signals.epoch == heard:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self.woken.wait(), min(remaining, RECHECK_S))
                if self.state is not None:
                    break
            else:
                await asyncio.sleep(min(pause, remaining))
                pause = min(1.5 * pause, LAST_POLL_S)
            heard = signals.epoch if signals.live else None  # before reading: nothing missed
            self.woken.clear()
            state = await check()
            if state is not None:
                return state
        self.via = "signal"
        return self.state


class Signals:
    """One per API process: a Redis connection pool, and one subscriber task that fans the
    job signals out to the waiting requests (keyed by job id) and the revocations out to the
    key cache, which it lets trust keys only while its subscription is confirmed."""

    def __init__(self, settings: Settings, keys: KeyCache) -> None:
        url = settings.resolved_redis_url
        self._redis = None if url is None else redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_keepalive=True
        )
        self._channels = {channel(settings, JOBS): self._job, channel(settings, KEYS): self._key}
        self._keys = keys
        self._waiters: dict[str, Waiter] = {}
        self.live = False  # a subscription is confirmed: signals are heard
        self.epoch = 0  # counts confirmed subscriptions

    @contextmanager
    def expect(self, job_id: str) -> Iterator[Waiter]:
        """Register a waiter for ``job_id`` (before the job is submitted)."""
        waiter = self._waiters[job_id] = Waiter(self)
        try:
            yield waiter
        finally:
            self._waiters.pop(job_id, None)

    def _job(self, payload: str) -> None:
        job_id, _, signal = payload.partition(" ")
        waiter = self._waiters.get(job_id)
        if waiter is not None:  # another process's request: not even parsed
            state, _, carried = signal.partition(" ")
            if carried:
                waiter.certificates = json.loads(carried)
            waiter.state = state
            waiter.woken.set()

    def _key(self, payload: str) -> None:
        self._keys.forget(payload)

    def _lost(self) -> None:
        """Signals may be missed from now on: every waiter reads its row, the key cache
        forgets everything."""
        self.live = self._keys.hearing = False
        self._keys.forget(None)
        for waiter in self._waiters.values():
            waiter.woken.set()

    async def run(self) -> None:
        """Subscribe and dispatch until cancelled; reconnect with backoff, logging a lost
        Redis once. Returns at once without Redis."""
        if self._redis is None:
            return
        pause, warned = RETRY_S[0], False
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(*self._channels)
                    async for message in pubsub.listen():
                        if message["type"] == "subscribe" and message["data"] == len(
                            self._channels
                        ):
                            self._keys.forget(None)  # revocations until now were missed
                            self.epoch += 1
                            self.live = self._keys.hearing = True
                            pause = RETRY_S[0]
                            if warned:
                                log.info("signals: subscribed to Redis again")
                            warned = False
                        elif message["type"] == "message":
                            self._dispatch(message)
            except (redis.RedisError, OSError) as exc:
                if not warned:
                    log.warning("signals: Redis unreachable (%s); waiting requests poll, the "
                                "key cache is off until it is back", exc)
                warned = True
            self._lost()
            await asyncio.sleep(pause)
            pause = min(2 * pause, RETRY_S[1])

    def _dispatch(self, message: dict[str, Any]) -> None:
        name = message["channel"]
        handle = self._channels.get(name.decode() if isinstance(name, bytes) else name)
        if handle is not None:
            data = message["data"]
            handle(data.decode() if isinstance(data, bytes) else str(data))

    async def close(self) -> None:
        """Release the connection pool."""
        self._lost()
        if self._redis is not None:
            await self._redis.aclose()
