"""The dashboard at ``/``: one static page (``app/static/dashboard``) whose script calls the
public /v1 API with the user's key, so that everything it shows is what the API answers. It is
served by the API itself, loads nothing from elsewhere, and its policy forbids it to."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse

from app.docs import STATIC_DIR

PAGE = STATIC_DIR / "dashboard" / "index.html"
#: the page's scripts, styles and calls come from this server only; the curve is a blob: URL
POLICY = "default-src 'self'; img-src 'self' blob:; object-src 'none'; frame-ancestors 'none'"


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard page at ``/`` (its assets are under ``/static``, app.docs)."""

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html",
                            headers={"Content-Security-Policy": POLICY})
