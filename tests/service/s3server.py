"""A real S3-compatible server for the tests: moto's standalone server (``moto[server]``) as a
child process on a free port, speaking the S3 HTTP protocol; and a TCP proxy in front of it
that can cut the connection mid-transfer (the server gone, as far as a client can tell) while
the server itself stays inspectable."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from models_store import ReadCache
from models_store.s3 import S3Store


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    """A running moto server: its endpoint and the environment that points boto3 at it."""

    endpoint: str
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        """AWS variables for processes that should use this server."""
        return {**AWS_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self, endpoint: str | None = None) -> Any:
        """A plain boto3 client (no store hooks: it can overwrite, as an attacker could)."""
        return boto3.client(
            "s3", endpoint_url=endpoint or self.endpoint, aws_access_key_id="test",
            aws_secret_access_key="test", region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        """A fresh, empty bucket's name."""
        name = f"rab-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def store(self, cache_dir: Path, bucket: str, prefix: str = "artefacts",
              endpoint: str | None = None, cache_bytes: int = 1 << 30) -> S3Store:
        """An ``S3Store`` on ``bucket`` of this server (or reached through ``endpoint``)."""
        from models_store.s3 import make_client

        with _environ({**self.env, "AWS_ENDPOINT_URL": endpoint or self.endpoint}):
            client = make_client()
        return S3Store(bucket, prefix, ReadCache(cache_dir, cache_bytes), client=client)


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def moto_server(log: Path) -> Iterator[S3Server]:
    """Start ``python -m moto.server`` on a free port; stopped (and waited for) on exit."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    server = S3Server(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited:\n{log.read_text()[-3000:]}")
            try:
                server.client().list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


class FaultProxy:
    """TCP proxy to ``target`` port. ``cut_after(upload=..)`` / ``cut_after(download=..)``
    drops every connection once that many bytes went that way; ``down`` refuses service
    (connections are closed at once) until ``up()``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.down = False
        self._limits: dict[str, int | None] = {"upload": None, "download": None}
        self._moved = {"upload": 0, "download": 0}
        self._stay_down = True
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_after(self, *, upload: int | None = None, download: int | None = None,
                  stay_down: bool = True) -> None:
        """Arm a cut once ``upload`` (client to server) or ``download`` bytes have passed;
        with ``stay_down`` the proxy then refuses service, else it serves again."""
        with self._lock:
            self._limits = {"upload": upload, "download": download}
            self._moved = {"upload": 0, "download": 0}
            self._stay_down = stay_down

    def up(self) -> None:
        self.down = False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._sockets += [client, server]
            for src, dst, way in ((client, server, "upload"), (server, client, "download")):
                threading.Thread(target=self._pump, args=(src, dst, way), daemon=True).start()

    def _cut(self) -> None:
        self.cuts += 1
        self.down = self._stay_down
        self._limits = {"upload": None, "download": None}
        for sock in self._sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets = []

    def _pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    limit = self._limits[way]
                    self._moved[way] += len(data)
                    if limit is not None and self._moved[way] >= limit:
                        self._cut()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.close()
