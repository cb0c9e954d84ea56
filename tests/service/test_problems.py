"""Error documents: an unexpected exception inside a route is answered, over real HTTP, as a
500 problem+json (logged with its traceback, which the body does not show) that announces the
closing of its connection, and the server goes on serving."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.main import create_app
from app.settings import Settings

from .conftest import serve_in_thread


def test_unexpected_errors_are_500_problems(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(data_dir=tmp_path))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with serve_in_thread(app) as url:
        response = httpx.get(f"{url}/boom")
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["status"] == 500 and body["instance"] == "/boom" and body["detail"]
        assert "secret internals" not in response.text
        assert response.headers["connection"] == "close"  # the server closes it: said so
        assert httpx.get(f"{url}/healthz").status_code == 200
    assert any("secret internals" in str(r.exc_info) for r in caplog.records if r.exc_info)
