"""/docs and /redoc render the API offline, from the package's own assets; the document names
operations after their functions, carries the package version and an error example per status."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.main import create_app
from rab import __version__

from .browser import offline_page
from .conftest import Service

pytestmark = pytest.mark.services
#: the one outside request a page makes: ReDoc's "API docs by Redocly" footer logo (an image
#: that is simply not shown offline; ReDoc has no option to leave it out)
COSMETIC = {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
OPERATIONS = ("create_job", "list_certificates", "get_curve", "create_dataset", "get_model")


def test_document_names_versions_and_examples() -> None:
    spec = create_app().openapi()
    assert spec["info"]["version"] == __version__
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert set(OPERATIONS) <= set(ids) and len(ids) == len(set(ids))
    for path, ops in spec["paths"].items():
        for op in ops.values():
            for status, response in op["responses"].items():
                if status[0] in "45" and "content" in response:
                    example = response["content"]["application/problem+json"]["example"]
                    assert example["status"] == int(status), (path, status)
                    assert "{" not in example["instance"], example
    get_job = spec["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert get_job["401"]["content"]["application/problem+json"]["example"]["title"] == (
        "Unauthorized"
    )
    assert "no job with id" in get_job["404"]["content"]["application/problem+json"][
        "example"]["detail"]


@pytest.mark.browser
@pytest.mark.parametrize("page_path", ["/docs", "/redoc"])
def test_docs_render_offline(service: Service, page_path: str, tmp_path: Path) -> None:
    html = httpx.get(service.base_url + page_path).text
    assert "cdn." not in html and "googleapis" not in html
    with offline_page() as (page, blocked):
        page.goto(service.base_url + page_path)
        if page_path == "/docs":  # Swagger UI: one block per operation, id in the DOM id
            page.wait_for_selector("#operations-jobs-create_job", timeout=30_000)
            rendered = page.inner_text("#swagger-ui")
        else:  # ReDoc: one section per operation, id from the operation id
            page.wait_for_selector("[id='operation/create_job'] h2", timeout=30_000)
            rendered = page.inner_text("body")
        page.screenshot(path=str(tmp_path / f"{page_path.strip('/')}.png"))
    assert f"{__version__}" in rendered
    for summary in ("Create Job", "List Certificates", "Get Curve", "Create Dataset"):
        assert summary in rendered
    assert set(blocked) <= COSMETIC, blocked
