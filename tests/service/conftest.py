"""Fixtures of the service tests: a fresh PostgreSQL database per run, a Redis key namespace,
a real Celery worker process and a real uvicorn server talking HTTP.

Everything that needs PostgreSQL or Redis depends on the root conftest's ``postgres_url`` /
``redis_url`` fixtures, so it skips when they are unreachable and fails under
``RAB_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app.db import Database
from app.migrate import upgrade
from app.settings import Settings
from contract.api import TERMINAL_STATES
from models_store import LocalStore, ObjectStore

from .s3server import S3Server, moto_server

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_cli(*args: str) -> list[str]:
    """Command line of the service commands (``rab serve`` etc.) run as a module."""
    return [sys.executable, "-m", "rab.cli.service", *args]


def create_key(env: dict[str, str], name: str, *flags: str) -> str:
    """A new API key secret, made through the CLI (``flags`` such as ``--operator``)."""
    out = subprocess.run(
        service_cli("keys", "create", "--name", name, *flags), env=env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120, check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for /healthz to answer 200 (fail with the server's log if it dies or hangs)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"server did not become healthy:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a child process we started, killing it if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn in a thread of this process (its lifespan run); its base
    URL. For tests that look inside the app while it answers real HTTP."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Service:
    """A running API + worker: base URL, environment, log directory, and its processes."""

    base_url: str
    env: dict[str, str]
    logs: Path
    store_dir: Path
    database_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_worker(
        self, name: str = "worker", queues: str = "cpu,gpu", env: dict[str, str] | None = None
    ) -> None:
        """Start a Celery worker process (one task at a time, in its own process) through
        ``rab worker``, with ``env`` overriding the service's environment."""
        log = (self.logs / f"{name}.log").open("ab")
        cmd = service_cli("worker", "--queues", queues, "--concurrency", "1")
        self.processes[name] = subprocess.Popen(
            cmd, env={**self.env, **(env or {})}, cwd=REPO_ROOT, stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_api(self, name: str = "api", port: int | None = None) -> str:
        """Start a uvicorn API process on ``port`` (a free one if None), wait until it is
        healthy; its base URL."""
        port = port or free_port()
        url, log = f"http://127.0.0.1:{port}", self.logs / f"{name}.log"
        self.processes[name] = process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
             "--host", "127.0.0.1", "--port", str(port)],
            env=self.env, cwd=REPO_ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )
        wait_healthy(url, process, log)
        return url

    def kill_worker(self, name: str = "worker") -> None:
        """SIGKILL a worker and its pool children at once, as when a machine dies."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def client(self, key: str | None) -> httpx.Client:
        """An HTTP client sending ``key`` as X-API-Key."""
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def log_tail(self) -> str:
        """The end of every process log, for failure messages."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.logs.glob("*")
        )


@contextmanager
def fresh_pg_database(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``postgres_url``, dropped afterwards."""
    import sqlalchemy

    name = f"rab_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.make_url(postgres_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the service of this test run."""
    with fresh_pg_database(postgres_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def migrated_db(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Settings, Database]]:
    """Settings and an open ``Database`` at the migrations' head: SQLite, then PostgreSQL."""
    with ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            url = stack.enter_context(fresh_pg_database(request.getfixturevalue("postgres_url")))
        settings = Settings(database_url=url, data_dir=tmp_path)
        upgrade(settings)
        db = Database(settings)
        stack.callback(db.engine.dispose)
        yield settings, db


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server process (moto's standalone server) for this test run."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ObjectStore]:
    """Opens one new, empty store (again at each call, as another process of the same machine
    would): a local directory, or a bucket of the moto server with a local cache."""
    if request.param == "local":
        return lambda: LocalStore(tmp_path / "store")
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = server.new_bucket()
    return lambda: server.store(tmp_path / "cache", bucket)


VISIBILITY_TIMEOUT_S = 45  # unacked tasks of a killed worker come back after this; every
# task in these tests must finish well within it (a longer one is delivered twice)
UPLOAD_LIMIT = 3 * 1024 * 1024  # spambase.data (698 kB) fits, a 4 MB upload does not
JSON_LIMIT = 2 * 1024 * 1024  # JSON bodies
DECOMPRESSED_LIMIT = 16 * 1024 * 1024  # arrays of an uploaded npz, decompressed


@contextmanager
def launch_service(
    root: Path, database_url: str, redis_url: str, extra_env: dict[str, str] | None = None,
    worker: bool = True,
) -> Iterator[Service]:
    """API (uvicorn subprocess) + a Celery worker subprocess (unless not ``worker``) on
    ``database_url`` and Redis, with their files under ``root``; ``extra_env`` overrides the
    settings."""
    logs = root / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "RAB_DATA_DIR": str(root / "data"),
        "RAB_STORE_DIR": str(root / "store"),
        "RAB_DATABASE_URL": database_url,
        "RAB_BROKER_URL": redis_url,
        "RAB_BROKER_KEY_PREFIX": f"rabtest-{uuid.uuid4().hex[:8]}:",
        "RAB_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "RAB_MAX_JSON_BYTES": str(JSON_LIMIT),
        "RAB_MAX_DECOMPRESSED_BYTES": str(DECOMPRESSED_LIMIT),
        "RAB_CERTIFY_WAIT_S": "30",
        "RAB_TRAIN_BATCH": "2",  # ensemble members in pairs: the stacked (vmap) trainer
        "RAB_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        # scan for a dead worker's unacked tasks every second (kombu: every 10th of 10 s ticks)
        "RAB_BROKER_TRANSPORT_OPTIONS": '{"unacked_restore_interval": 1, '
        '"unacked_restore_throttle": 1}',
        **(extra_env or {}),
    }
    port = free_port()
    svc = Service(f"http://127.0.0.1:{port}", env, logs, root / "store", database_url)
    try:
        svc.start_api("api", port)
        if worker:
            svc.start_worker()
        yield svc
    finally:
        for process in svc.processes.values():
            stop(process)


@pytest.fixture(scope="session")
def service(
    tmp_path_factory: pytest.TempPathFactory, pg_database: str, redis_url: str
) -> Iterator[Service]:
    """API (uvicorn subprocess) + Celery worker subprocess on PostgreSQL and Redis."""
    with launch_service(tmp_path_factory.mktemp("service"), pg_database, redis_url) as svc:
        yield svc


@pytest.fixture(scope="session")
def key_a(service: Service) -> str:
    """One API key."""
    return create_key(service.env, "alice")


@pytest.fixture(scope="session")
def key_b(service: Service) -> str:
    """Another API key."""
    return create_key(service.env, "bob")


@pytest.fixture
def client_a(service: Service, key_a: str) -> Iterator[httpx.Client]:
    with service.client(key_a) as client:
        yield client


@pytest.fixture
def client_b(service: Service, key_b: str) -> Iterator[httpx.Client]:
    with service.client(key_b) as client:
        yield client


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, object]:
    """Poll a job until it reaches a terminal state; returns its last representation."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in TERMINAL_STATES:
            return job  # type: ignore[no-any-return]
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish in {timeout} s: {job}")
