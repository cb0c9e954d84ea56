"""Private PostgreSQL, Redis and RabbitMQ endpoints for the fault tests: servers these tests
may stop and restart (the machine's shared ones are never touched)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .conftest import free_port


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of our own (``initdb`` + ``pg_ctl`` as the postgres user)."""

    bin_dir: Path
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin_dir / "pg_ctl"), "-D",
             str(self.data_dir), "-w", "-t", "60", *args],
            check=True, capture_output=True, timeout=90,
        )

    def start(self) -> None:
        # the WAL writer waits its longest (10 s) between rounds: a transaction committed
        # without waiting for the disk stays in shared memory, which a crash loses, until some
        # later durable commit or that round writes it
        self._ctl("-o", f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 "
                  "-c wal_writer_delay=10000", "-l", str(self.data_dir / "server.log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def crash(self) -> None:
        """Stop as a crash does: every server process killed, shared memory (and the WAL
        not yet written from it) lost, recovery from the log at the next start."""
        self._ctl("-m", "immediate", "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    (bin_dir,) = sorted(Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin"))[-1:]
    root = Path(tempfile.mkdtemp(prefix="rab-pg-"))
    os.chmod(root, 0o755)
    data = root / "data"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(bin_dir / "initdb"), "-D", str(data),
         "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True, capture_output=True, timeout=120,
    )
    server = PrivatePostgres(bin_dir, data, free_port())
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class PrivateRedis:
    """A Redis of our own that keeps nothing on disk: a restart loses every message."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process = None


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh virtual host on the machine's RabbitMQ (its queues are ours alone)."""
    vhost = f"rabtest-{uuid.uuid4().hex[:10]}"
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run([*ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run([*ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True, timeout=60)
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([*ctl, "delete_vhost", vhost], capture_output=True, timeout=60)
