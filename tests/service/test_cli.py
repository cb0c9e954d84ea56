"""``rab keys create`` / ``serve`` / ``worker`` registration, and keys stored only as hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import sqlalchemy
import typer
from typer.testing import CliRunner

from rab.cli.service import register


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_commands_are_registered() -> None:
    result = CliRunner().invoke(_app(), ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "worker", "keys"):
        assert command in result.output


def test_keys_create_stores_only_a_hash(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _app(), ["keys", "create", "--name", "ci", "--data-dir", str(tmp_path)],
        # --data-dir exports RAB_DATA_DIR for child processes; the runner restores it after
        env={"RAB_DATABASE_URL": "", "RAB_BROKER_URL": "", "RAB_DATA_DIR": None},
    )
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[-1]
    assert secret.startswith("rab_") and len(secret) > 40
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'rab.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("SELECT name, key_hash FROM api_keys")).all()
    finally:
        engine.dispose()
    assert rows == [("ci", hashlib.sha256(secret.encode()).hexdigest())]
    assert secret.encode() not in (tmp_path / "rab.db").read_bytes()


def test_api_processes_listen_with_tcp_nodelay() -> None:
    """``rab serve --api-workers N``: the connections of its listening socket have TCP_NODELAY
    (a kept-alive answer otherwise waits 40 ms for the client's delayed ACK)."""
    import socket

    import uvicorn

    from rab.cli.service import listening_socket

    server = listening_socket(uvicorn.Config("app.main:create_app", host="127.0.0.1", port=0))
    try:
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            client.sendall(b"x")
            accepted, _ = server.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        server.close()
