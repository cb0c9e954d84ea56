"""``rab submit`` / ``status`` / ``results`` through typer's CliRunner: against the real service
(PostgreSQL, Redis, worker, uvicorn), and their exit codes and messages for bad arguments and
an unreachable service (those need no service)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from rab.cli.remote import FAILED, UNREACHABLE, register
from rab.client import Client

from .conftest import REPO_ROOT, Service, free_port
from .helpers import blobs, npz_bytes

BAD_INPUT = 2
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def _invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    app = typer.Typer()
    register(app)
    # RAB_URL / RAB_API_KEY of the calling shell must not leak into the tests
    base: dict[str, str | None] = {"RAB_URL": None, "RAB_API_KEY": None}
    return CliRunner().invoke(app, list(args), env={**base, **(env or {})})


def _expected_failure(result: Result, code: int, *phrases: str) -> None:
    """A clean exit with ``code``: a message naming the problem, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in " ".join(result.output.split()), result.output


def test_client_and_commands_talk_http_only() -> None:
    """Neither the client nor the remote commands import the service, its workers or torch."""
    code = ("import sys, rab.client, rab.cli.remote, rab.cli.demo; print(sorted({m.split('.')[0] "
            "for m in sys.modules} & {'app', 'workers', 'models_store', 'torch', 'celery', "
            "'sqlalchemy'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_commands_are_registered() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in ("submit", "status", "results"):
        assert command in result.output


def test_unreachable_service_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["status", "abc"], ["results", "abc"],
                 ["submit", "digits", "--sigma", "1"]):
        result = _invoke(*args, "--url", url, "--api-key", "rab_x")
        _expected_failure(result, UNREACHABLE, f"cannot reach the RAB service at {url}",
                          "rab serve")


def test_bad_arguments_exit_2_before_any_request(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: these must fail earlier
    key = ["--url", url, "--api-key", "rab_x"]
    cases = {
        "expects KEY=VALUE": ["submit", "digits", "--sigma", "1", "--param", "k", *key],
        "--method must be one of knn, ensemble, partition": [
            "submit", "digits", "--sigma", "1", "--method", "svm", *key],
        "--classes needs at least two": ["submit", "digits", "--sigma", "1", "--classes", "3",
                                         *key],
        "no dataset file at": ["submit", str(tmp_path / "missing.npz"), "--sigma", "1", *key],
        "no API key": ["status", "abc", "--url", url],
        "base_url must start with http": ["status", "abc", "--url", "localhost:1",
                                          "--api-key", "k"],
    }
    for phrase, args in cases.items():
        _expected_failure(_invoke(*args), BAD_INPUT, phrase)
    missing = _invoke("submit", "digits", *key)  # --sigma is required but by partition jobs
    _expected_failure(missing, BAD_INPUT, "the knn method needs --sigma")


@pytest.mark.services
@pytest.mark.slow
def test_submit_wait_status_results(service: Service, key_a: str, tmp_path: Path) -> None:
    key = ["--url", service.base_url, "--api-key", key_a]
    submitted = _invoke("submit", "digits", "--classes", "0,1", "--sigma", "0.5", "--k", "3",
                        "--num-test", "10", "--attack", "blending", "--norm", "1",
                        "--rate", "0.1", "--poison-seed", "2", "--wait", *key)
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.splitlines()[0]
    assert JOB_ID.match(job_id), submitted.stdout
    assert "clean (10)" in submitted.stdout and "backdoor (" in submitted.stdout
    with Client(service.base_url, key_a) as client:
        job = client.get_job(job_id)
        assert job.state == "succeeded"
        assert job.params["k"] == 3 and job.params["num_test"] == 10
        assert job.seeds.poisoning == 2 and job.seeds.training is None
        assert job.attack == {"kind": "blending", "norm": 1.0, "rate": 0.1, "target": 0,
                              "seed": 2, "mode": "replace", "clip": True, "options": {}}
        summary = client.summary(job_id)
    env: dict[str, str | None] = {"RAB_URL": service.base_url, "RAB_API_KEY": key_a}
    status = _invoke("status", job_id, env=env)  # URL and key from the environment
    assert status.exit_code == 0, status.output
    assert "succeeded" in status.stdout and f"job {job_id}" in status.stdout
    as_json = _invoke("status", job_id, "--json", env=env)
    assert json.loads(as_json.stdout)["state"] == "succeeded"
    out_json, out_png = tmp_path / "r" / "summary.json", tmp_path / "r" / "curve.png"
    results = _invoke("results", job_id, "--json", str(out_json), "--plot", str(out_png), *key)
    assert results.exit_code == 0, results.output
    record = json.loads(out_json.read_text())
    assert record["job"]["id"] == job_id
    assert record["summary"] == summary.model_dump(mode="json", exclude_none=True)
    clean = summary.sets["clean"]
    assert f"{clean.accuracy:.3f}" in results.stdout
    assert out_png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.services
def test_upload_then_status_wait_and_service_errors(
    service: Service, key_a: str, tmp_path: Path
) -> None:
    key = ["--url", service.base_url, "--api-key", key_a]
    path = tmp_path / "data.npz"
    path.write_bytes(npz_bytes(**blobs(seed=7202)))
    submitted = _invoke("submit", str(path), "--sigma", "1", "-p", "num_levels=50", *key)
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    waited = _invoke("status", job_id, "--wait", "--timeout", "120", *key)
    assert waited.exit_code == 0, waited.output
    assert "succeeded" in waited.stdout
    # the service's own refusals: its problem detail, and the exit status of its kind
    _expected_failure(_invoke("submit", str(path), "--sigma", "-1", *key), BAD_INPUT, "sigma")
    _expected_failure(_invoke("status", "nope", *key), FAILED, "no job with id 'nope'")
    _expected_failure(_invoke("status", job_id, "--url", service.base_url, "--api-key",
                              "rab_wrong"), FAILED, "401")
