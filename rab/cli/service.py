"""``rab serve``, ``rab worker``, ``rab keys create|list|revoke`` and ``rab store gc``: the
certification service's commands.

Settings come from ``RAB_*`` environment variables (see ``app/settings.py``). With none set,
``rab serve`` runs the embedded mode: SQLite, a local store and a local Celery transport under
``./rab-data``, plus a worker process that it starts and stops itself.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rab.cli._common import fail, print_records, timestamp
from rab.extras import require

if TYPE_CHECKING:
    import uvicorn

    from app.db import Database
    from app.settings import Settings

log = logging.getLogger("rab.serve")


def _require_service() -> None:
    """Every command here runs service code: name its extra when it is missing."""
    require("service", "the service commands")


keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True, callback=_require_service)
store_app = typer.Typer(
    help="Maintain the artefact store.", no_args_is_help=True, callback=_require_service
)


def _settings(data_dir: Path | None) -> Settings:
    """Settings from the environment, with ``--data-dir`` exported to child processes."""
    if data_dir is not None:
        os.environ["RAB_DATA_DIR"] = str(data_dir.resolve())
    _require_service()
    from app.settings import get_settings

    return get_settings()


DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Embedded-mode directory (RAB_DATA_DIR).")
]


def worker_command(queues: str, concurrency: int, loglevel: str = "info") -> list[str]:
    """The command line of a Celery worker process for ``queues``, running ``concurrency``
    tasks at a time.

    A worker of one runs its task in its own process (Celery's ``threads`` pool, one thread),
    not in a pool process of its own: a message no longer goes through a pipe to that process
    and its outcome back (3 ms of a sequential certify request's 22 ms, measured side by side),
    and the process's main loop stays free for the broker (heartbeats, revoked messages) while
    the task runs. A crash then ends the whole worker, which its supervisor starts again (``rab
    serve``, a container's restart policy); the units it held are re-queued by the reaper once
    their leases expire, as for a lost machine. Several (one per GPU, or cores for the CPU
    queue) run in as many pool processes (``prefork``)."""
    pool = "threads" if concurrency == 1 else "prefork"
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", queues, "-c", str(concurrency), "--pool", pool, "--loglevel", loglevel,
        "--without-gossip", "--without-mingle", "-n", f"rab-{queues.replace(',', '-')}@%h",
    ]


class Supervised:
    """A child process kept running: when it exits unexpectedly (killed, crashed) it is
    started again after a backoff that doubles from 1 s up to 30 s (reset once it has run a
    minute), each restart logged. Its work is not lost: the units it held are re-queued by
    the API's reaper once their leases expire."""

    def __init__(self, command: list[str]) -> None:
        self.command, self._stopping = command, threading.Event()
        self.process = self._start()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, env=os.environ.copy(), start_new_session=True)

    def _watch(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            code = self.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:
                delay = 1.0
            log.warning("local worker (pid %d) exited with %s; restarting in %.0f s",
                        self.process.pid, code, delay)
            if self._stopping.wait(delay):
                return
            self.process = self._start()
            delay = min(2 * delay, 30.0)

    def stop(self) -> None:
        """Stop the child (TERM, a warm shutdown; KILL after 30 s) and stop restarting it."""
        self._stopping.set()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def listening_socket(config: uvicorn.Config) -> socket.socket:
    """The socket uvicorn's ``config`` binds, with ``TCP_NODELAY``, which Linux passes on to
    the connections it accepts. uvicorn binds it with protocol 0, and asyncio sets
    ``TCP_NODELAY`` only on connections of an ``IPPROTO_TCP`` socket; without it every answer
    on a kept-alive connection, written as its headers then its body, waits for the client's
    delayed acknowledgement (40 ms on Linux: ``GET /healthz`` took 52 ms instead of 6 ms
    with 2 API workers)."""
    sock = config.bind_socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def serve_processes(app: str, host: str, port: int, workers: int, **options: Any) -> None:
    """uvicorn's ``workers`` processes of the app ``app`` (an import string; ``options`` go
    to ``uvicorn.Config``) as ``uvicorn.run`` serves them, on a :func:`listening_socket`."""
    from uvicorn import Config
    from uvicorn.supervisors import Multiprocess

    config = Config(app, host=host, port=port, workers=workers, **options)
    with suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[listening_socket(config)]).run()


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    worker: Annotated[bool, typer.Option(help="Start a local worker process too.")] = True,
    concurrency: Annotated[int, typer.Option(help="Local worker processes.")] = 1,
    api_workers: Annotated[int | None, typer.Option(
        "--api-workers", min=1, help="uvicorn worker processes (RAB_API_WORKERS, default 1).",
    )] = None,
    data_dir: DataDir = None,
) -> None:
    """Run the API (migrating the database first) and, by default, a local worker.

    With several API workers each process builds the app from the environment (the factory
    ``app.main:create_app``) and runs its own reaper: safe, since the reaper locks the rows
    it repairs, skipping those another holds (``app.units.reap``)."""
    if api_workers is not None:
        os.environ["RAB_API_WORKERS"] = str(api_workers)
    settings = _settings(data_dir)  # names the service extra when it is missing
    import uvicorn

    from app.main import create_app
    from app.migrate import upgrade

    upgrade(settings)
    # uvicorn re-raises SIGTERM after its graceful shutdown; exit through ``finally`` instead
    # so that the local worker is stopped too.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    child = Supervised(worker_command("cpu,gpu", concurrency)) if worker else None
    try:
        # uvicorn leaves logging to the app (JSON lines, app.logs)
        if settings.api_workers > 1:
            serve_processes("app.main:create_app", host, port, settings.api_workers,
                            factory=True, log_config=None)
        else:
            uvicorn.run(create_app(settings), host=host, port=port, log_config=None)
    finally:
        if child is not None:
            child.stop()


def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues: cpu (K-NN jobs), gpu (ensemble jobs).")
    ] = "cpu,gpu",
    concurrency: Annotated[int, typer.Option(help="Worker processes (1 per GPU).")] = 1,
    data_dir: DataDir = None,
) -> None:
    """Run a Celery worker (prefetch 1, late acks) on the given queues; by default both, so
    that one worker runs every kind of job (a deployment splits them across machines)."""
    _settings(data_dir)
    os.execv(sys.executable, worker_command(queues, concurrency))


@contextmanager
def _database(data_dir: Path | None) -> Iterator[tuple[Settings, Database]]:
    """The settings and the database (migrated to the head first), disposed afterwards."""
    settings = _settings(data_dir)
    from app.db import Database
    from app.migrate import upgrade

    upgrade(settings)
    db = Database(settings)
    try:
        yield settings, db
    finally:
        db.engine.dispose()


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Option(help="Who or what the key is for.")] = "default",
    operator: Annotated[bool, typer.Option(
        "--operator", help="The key may also read /metrics and /readyz/details.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Create an API key and print its secret (shown only this once)."""
    from app.auth import create_key as make_key

    with _database(data_dir) as (_, db), db.session() as session:
        row, secret = make_key(session, name, operator=operator)
        key_id = row.id
    typer.echo(f"key id: {key_id}", err=True)
    typer.echo(secret)


@keys_app.command("list")
def list_keys(data_dir: DataDir = None) -> None:
    """Every key (never its secret): id, name, operator or not, created, revoked."""
    from rich.console import Console

    from app.auth import list_keys as all_keys

    with _database(data_dir) as (_, db), db.session() as session:
        rows = [(k.id, k.name, "yes" if k.operator else "no", timestamp(k.created_at),
                 timestamp(k.revoked_at)) for k in all_keys(session)]
    print_records(
        Console(), f"{len(rows)} API keys", ("id", "name", "operator", "created", "revoked"), rows
    )


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `rab keys list`).")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a key: the service refuses it (401) from its next request on (every API
    process hears of it on Redis, where there is one)."""
    from app.auth import revoke_key as revoke
    from app.replies import publish_key_revoked

    with _database(data_dir) as (settings, db):
        with db.session() as session:
            revoked = revoke(session, key_id)
        if not revoked:
            fail(f"no unrevoked key with id {key_id!r}", 1)
        if not publish_key_revoked(settings, key_id):
            typer.echo(f"warning: Redis unreachable; API processes may accept the key for up "
                       f"to RAB_KEY_CACHE_TTL_S ({settings.key_cache_ttl_s:g} s)", err=True)
    typer.echo(f"revoked {key_id}", err=True)


@store_app.command("gc")
def store_gc(
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete the objects (default: only list them).")
    ] = False,
    grace_hours: Annotated[
        float, typer.Option(min=0, help="Keep every object written in the last GRACE hours.")
    ] = 24.0,
    data_dir: DataDir = None,
) -> None:
    """List (dry run) or delete the stored objects that no row references.

    Safe while the service runs: an object written or rewritten within the grace period is
    kept, and each deletion re-checks the object under a lock of its database row (the rule is
    ``app.artefacts.collect_garbage``'s). The grace period must exceed the longest time a job
    takes between storing an object and recording the row that names it (seconds in practice).
    """
    from datetime import timedelta

    from app.artefacts import collect_garbage

    with _database(data_dir) as (settings, db):
        found = collect_garbage(
            db, settings.open_store(), timedelta(hours=grace_hours), delete=delete
        )
    for sha256 in found:
        typer.echo(sha256)
    verb = "deleted" if delete else "unreferenced (dry run; --delete to delete)"
    typer.echo(f"{len(found)} objects {verb}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``worker``, ``keys create|list|revoke`` and ``store gc`` to the root
    ``rab`` command."""
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.add_typer(keys_app, name="keys")
    app.add_typer(store_app, name="store")


def main() -> None:
    """``python -m rab.cli.service``: the service commands on their own."""
    app = typer.Typer(no_args_is_help=True, add_completion=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
