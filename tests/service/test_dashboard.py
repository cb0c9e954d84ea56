"""The dashboard at ``/`` driven in headless Chromium against the real service (API, worker,
PostgreSQL, Redis), offline: sign in, upload Spambase, submit a K-NN job and watch it finish,
read its summary, curve and certificates, submit a partition job and read its poison counts,
then cancel a running ensemble. Every figure checked
on the page is compared with what the API answers. Screenshots of each page go to the test
run's temporary directory."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from rab.seeds import MAX_SEED

from .browser import offline_page
from .conftest import Service, create_key

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.browser]
SECOND = 1000  # Playwright counts milliseconds


def _fmt(value: float | int) -> str:
    """A figure as the dashboard prints it (integers as they are, others to 4 decimals)."""
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def test_dashboard_flow(
    service: Service, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shots = tmp_path_factory.mktemp("dashboard-screenshots")
    key = create_key(service.env, "dashboard")
    api = service.client(key)
    csp = api.get("/").headers["content-security-policy"]
    assert "default-src 'self'" in csp

    with offline_page() as (page, blocked):
        page.set_default_timeout(30 * SECOND)
        page.goto(service.base_url + "/")
        page.wait_for_selector("#sign-in")
        page.screenshot(path=str(shots / "01-sign-in.png"))
        page.fill("#api-key", "rab_not-a-key")
        page.click("#sign-in button")
        page.wait_for_selector("#error:has-text('unknown or revoked API key')")
        page.fill("#api-key", key)
        page.click("#sign-in button")
        page.wait_for_selector("#datasets")

        # upload the real Spambase CSV from the form
        page.click("text=Upload a dataset")
        page.set_input_files("#upload-file", str(shared_data / "spambase.data"))
        page.select_option("select[name=format]", "csv")
        page.click("#upload-submit")
        page.wait_for_selector("#upload-result")
        result = page.inner_text("#upload-result")
        (dataset,) = api.get("/v1/datasets").json()["items"]
        assert dataset["train_size"] == 3680 and dataset["test_size"] == 921
        assert dataset["id"] in result and dataset["sha256"] in result
        page.screenshot(path=str(shots / "02-upload.png"))

        # submit a K-NN job on it and watch it finish
        page.click("text=Submit a job on it")
        page.wait_for_selector("#job-form")
        assert page.input_value("#f-dataset") == dataset["id"]
        page.fill("#f-sigma", "1")
        page.fill("#f-num_test", "24")
        page.fill("#f-spread", "0.1")
        page.screenshot(path=str(shots / "03-submit-knn.png"))
        page.click("#job-submit")
        page.wait_for_selector("#job")
        job_id = page.url.rsplit("/", 1)[-1]
        page.wait_for_selector("#job [data-state=succeeded]", timeout=180 * SECOND)
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "succeeded" and job["method"] == "knn"
        assert job["params"]["num_test"] == 24 and job["params"]["k"] == 5

        # the summary tables are the API's figures
        summary = api.get(f"/v1/jobs/{job_id}/summary").json()
        radii = page.inner_text("#radii-clean")
        for radius, accuracy in summary["clean"]["certified_accuracy"].items():
            assert f"{radius}\t{_fmt(accuracy)}" in radii
        assert _fmt(summary["clean"]["accuracy"]) in page.inner_text("#summary-clean")
        # provenance: the dataset's hash and the model's code version
        model = api.get(f"/v1/models/{job['model_id']}").json()
        provenance = page.inner_text("#provenance")
        assert dataset["sha256"] in provenance and model["code_version"] in provenance
        assert model["train_sha256"] in provenance

        # the curve is the API's PNG, rendered
        page.wait_for_function(
            "document.querySelector('#curve-img')?.naturalWidth > 0", timeout=30 * SECOND
        )
        page.locator("#curve").screenshot(path=str(shots / "04-curve.png"))
        page.screenshot(path=str(shots / "05-job-knn.png"), full_page=True)
        text = page.inner_text("#main")
        assert "null" not in text and "undefined" not in text

        # certificates: pages of 10 through the cursor, the filter, the sort
        everything = api.get(f"/v1/jobs/{job_id}/certificates", params={"limit": 100}).json()
        assert len(everything["items"]) == 24
        page.wait_for_selector("#cert-table")
        assert page.locator("#cert-table tbody tr").count() == 10
        page.click("#cert-next")
        page.wait_for_selector("#cert-page:has-text('page 2')")
        first = page.inner_text("#cert-table tbody tr:first-child td:first-child")
        assert first == str(everything["items"][10]["index"])
        page.select_option("#cert-correct", "true")
        page.select_option("#cert-limit", "100")
        page.select_option("#cert-sort", "radius")
        page.click("#cert-apply")
        page.wait_for_selector("#cert-page:has-text('page 1')")
        correct = [c for c in everything["items"] if c["correct"]]
        page.wait_for_function(
            f"document.querySelectorAll('#cert-table tbody tr').length == {len(correct)}"
        )
        shown = page.locator("#cert-table tbody tr td:nth-child(6)").all_inner_texts()
        expected = sorted((c["radius"] for c in correct), key=float, reverse=True)
        assert shown == [_fmt(float(r)) if r != "Infinity" else "Infinity" for r in expected]
        page.locator("#certificates").screenshot(path=str(shots / "06-certificates.png"))

        # the overview lists the dataset, the job and its model
        page.click("text=Overview")
        page.wait_for_selector("#jobs-table")
        assert job_id in page.inner_text("#jobs")
        # without GET /v1/jobs (an older server) the page says so and shows this tab's jobs
        listed = api.get("/v1/jobs").status_code == 200
        assert page.locator("#jobs-note").count() == (0 if listed else 1)
        assert "null" not in page.inner_text("#main")
        assert model["id"] in page.inner_text("#models")
        assert dataset["id"] in page.inner_text("#datasets")
        page.screenshot(path=str(shots / "07-overview.png"), full_page=True)

        # a partition job (poison-count certificates, no sigma) from the same form
        page.click("text=Submit a job")
        page.wait_for_selector("#job-form")
        page.select_option("#f-method", "partition")
        assert not page.is_visible("#f-sigma")
        page.fill("#f-num_test", "24")
        page.fill("#f-p_k", "6")
        page.fill("#f-p_epochs", "1")
        page.fill("#f-p_seed", "7")
        page.click("#job-submit")
        page.wait_for_selector("#job")
        partition_id = page.url.rsplit("/", 1)[-1]
        page.wait_for_selector("#job [data-state=succeeded]", timeout=240 * SECOND)
        partition = api.get(f"/v1/jobs/{partition_id}").json()
        assert partition["method"] == "partition" and "sigma" not in partition["params"]
        assert partition["params"]["k"] == 6 and partition["params"]["seed"] == 7
        counted = api.get(f"/v1/jobs/{partition_id}/summary").json()["clean"]["poison_count"]
        median = float(counted["median_count"])  # printed as JavaScript prints a number
        assert f"median {int(median) if median.is_integer() else median}" in page.inner_text(
            "#main")
        page.wait_for_function(
            "document.querySelector('#count-curve-img')?.naturalWidth > 0", timeout=30 * SECOND
        )
        page.screenshot(path=str(shots / "08a-job-partition.png"), full_page=True)

        # an ensemble far too large to finish: cancel it once it runs
        page.click("text=Submit a job")
        page.wait_for_selector("#job-form")
        page.select_option("#f-method", "ensemble")
        page.fill("#f-sigma", "1")
        page.fill("#f-num_test", "4")
        page.fill("#f-num_models", "1000")
        page.fill("#f-epochs", "1")
        page.fill("#f-seed", str(MAX_SEED))
        page.select_option("select[name=arch]", "mlp")
        page.click("#job-submit")
        page.wait_for_selector("#job [data-state=running]", timeout=120 * SECOND)
        ensemble_id = page.url.rsplit("/", 1)[-1]
        page.screenshot(path=str(shots / "08-ensemble-running.png"), full_page=True)
        # a seed beyond 2^53 goes and comes back digit for digit (not as a rounded double)
        assert api.get(f"/v1/jobs/{ensemble_id}").json()["seeds"]["training"] == MAX_SEED
        assert str(MAX_SEED) in page.inner_text("#job-params")
        assert str(MAX_SEED) in page.inner_text("#provenance")
        page.click("#cancel")
        page.wait_for_selector("#job [data-state=cancelled]")
        assert api.get(f"/v1/jobs/{ensemble_id}").json()["state"] == "cancelled"
        assert page.locator("#cancel").count() == 0
        page.screenshot(path=str(shots / "09-ensemble-cancelled.png"), full_page=True)
    assert blocked == [], blocked
    print(f"screenshots: {shots}")


def test_dashboard_page_is_served(service: Service) -> None:
    response = httpx.get(service.base_url + "/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    for asset in ("/static/dashboard/dashboard.js", "/static/dashboard/dashboard.css"):
        assert asset in response.text
        assert httpx.get(service.base_url + asset).status_code == 200
    assert "http://" not in response.text.replace(service.base_url, "")
    assert "https://" not in response.text
