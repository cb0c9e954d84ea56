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
