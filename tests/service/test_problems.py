"""Error documents: an unexpected exception inside a route is answered, over real HTTP, as a
500 problem+json (logged with its traceback, which the body does not show) that announces the
closing of its connection, and the server goes on serving."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.main import create_app
from app.settings import Settings

from .conftest import free_port


def test_unexpected_errors_are_500_problems(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(data_dir=tmp_path))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        response = httpx.get(f"http://127.0.0.1:{port}/boom")
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["status"] == 500 and body["instance"] == "/boom" and body["detail"]
        assert "secret internals" not in response.text
        assert response.headers["connection"] == "close"  # the server closes it: said so
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert any("secret internals" in str(r.exc_info) for r in caplog.records if r.exc_info)
