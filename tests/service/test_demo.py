"""``rab demo`` end to end as a subprocess (embedded mode: it starts ``rab serve`` itself), made
small with its options; Ctrl-C stopping the service it started; and the client's certify
call when the service answers 202 (its embedded service told not to wait)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

import rab.data as rd
from contract.api import job_request
from rab.cli.demo import embedded_service
from rab.client import Client

pytestmark = pytest.mark.slow

URL = re.compile(r"service ready at (http://127\.0\.0\.1:\d+)")


def _demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "rab.cli.demo", *args]


def _env() -> dict[str, str]:
    # the demo must not need (nor use) any RAB_* setting, nor a terminal
    return {k: v for k, v in os.environ.items() if not k.startswith("RAB_")} | {"COLUMNS": "100"}


def _is_down(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=2)
    except httpx.TransportError:
        return True
    return False


def _processes_of(data_dir: Path) -> list[int]:
    """Processes whose environment points at ``data_dir`` (the server and its worker)."""
    wanted = f"RAB_DATA_DIR={data_dir.resolve()}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if wanted in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:  # gone, or not ours
            continue
    return pids


def test_demo_runs_end_to_end_and_writes_its_outputs(tmp_path: Path) -> None:
    out, data = tmp_path / "out", tmp_path / "data"
    done = subprocess.run(
        _demo("--output", str(out), "--data-dir", str(data), "--num-test", "6",
              "--num-models", "2", "--epochs", "1"),
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=400, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    files = {p.name for p in out.iterdir()}
    assert {"knn.json", "knn-curve.png", "ensemble.json", "ensemble-curve.png"} <= files
    for method, size in (("knn", None), ("ensemble", 2)):
        record = json.loads((out / f"{method}.json").read_text())
        job, summary = record["job"], record["summary"]
        assert job["state"] == "succeeded" and job["method"] == method
        assert job["attack"]["kind"] == "blending" and job["params"]["num_test"] == 6
        if size is not None:
            assert job["params"]["num_models"] == size and job["params"]["epochs"] == 1
        assert summary["clean"]["num_points"] == 6 and 0 < summary["backdoor"]["num_points"] <= 6
        assert 0.0 <= summary["attack_success_rate"] <= 1.0
        with Image.open(out / f"{method}-curve.png") as image:
            image.verify()
            assert image.format == "PNG"
    assert done.stdout.count("clean (6)") == 2  # one table per job
    assert f"outputs in {out.resolve()}" in done.stdout
    assert (data / "rab.db").is_file()  # --data-dir is used and kept
    log = (out / "service.log").read_text()
    assert "Warm shutdown" in log  # the worker was stopped by `rab serve`, not orphaned
    url = URL.search(" ".join(done.stderr.split()))
    assert url is not None and _is_down(url.group(1))
    assert _processes_of(data) == []


def test_ctrl_c_stops_the_service(tmp_path: Path) -> None:
    out, data = tmp_path / "out", tmp_path / "data"
    process = subprocess.Popen(
        _demo("--output", str(out), "--data-dir", str(data), "--num-test", "6"),
        cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # as at a terminal, whatever this run inherited: a shell's background job (`make test &`)
        # ignores SIGINT, and so would the demo
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen, url = "", None
    deadline = time.monotonic() + 180
    try:
        assert process.stderr is not None
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen += line
            match = URL.search(line)
            url = match.group(1) if match else None
        assert url is not None, seen
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, seen + rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert _is_down(url)
    assert _processes_of(data) == []  # neither the server nor its worker outlives the demo


def test_certify_polls_when_the_service_answers_202(tmp_path: Path) -> None:
    local = rd.select_classes(rd.load_sklearn("digits"), [0, 1])
    inputs = local.X_test[:3].reshape(3, -1)
    with embedded_service(tmp_path / "data", tmp_path / "serve.log",
                          settings={"RAB_CERTIFY_WAIT_S": "0"}) as (url, key), \
            Client(url, key) as client:
        dataset = client.create_dataset("digits", classes=[0, 1])
        job = client.submit_job(
            job_request(dataset.id, "knn", {"sigma": 0.5, "k": 3, "num_test": 5})
        )
        job = client.wait(job.id, timeout=120)
        assert job.model_id is not None
        raw = httpx.post(f"{url}/v1/models/{job.model_id}/certify", headers={"X-API-Key": key},
                         json={"inputs": inputs.tolist()}, timeout=30)
        assert raw.status_code == 202, raw.text  # the service does not wait
        answer = client.certify(job.model_id, inputs, timeout=120)
        certify_job = client.get_job(answer.job_id)
        assert (certify_job.kind, certify_job.state) == ("certify", "succeeded")
        evaluated = list(client.certificates(job.id))[:3]
    assert [c.index for c in answer.certificates] == [0, 1, 2]
    assert [c.prediction for c in answer.certificates] == [c.prediction for c in evaluated]
    assert [c.p_a for c in answer.certificates] == pytest.approx([c.p_a for c in evaluated],
                                                                 abs=1e-12)
