"""``rab demo``: the service end to end on the embedded default, with nothing to install.

Starts ``rab serve`` (SQLite, local store, filesystem broker, its own worker) as a subprocess on
a free port with a fresh data directory, creates an API key as ``rab keys create`` does, then,
over HTTP with :class:`rab.client.Client`: names the built-in scikit-learn digits 0 vs 1, and
certifies them under a blending backdoor (the poisoned training set, the backdoored test set)
with the exact smoothed K-NN (Theorem 3) and with a small DNN-RAB ensemble of MLPs (Algorithm 1,
Clopper-Pearson bounds). Prints each job's certified-accuracy table, writes the job+summary JSON
and the certified-accuracy plot of each to ``--output``, and stops the service (also on Ctrl-C
or an error).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer

from contract.api import job_request
from rab.cli._common import console
from rab.cli.local import DEMO_ATTACK
from rab.cli.remote import connect, error, stdout, wait_with_progress, write_results
from rab.client import Client, UnreachableError
from rab.client.api import Method
from rab.extras import require

__all__ = ["demo", "embedded_service", "register"]

#: The demo's data and attack (the same as ``rab demo-local``'s): digits 0 vs 1, a blending
#: trigger of norm 1 added to 10% of the training points, relabelled to class 0.
DATASET, CLASSES = "digits", [0, 1]
ATTACK: dict[str, Any] = DEMO_ATTACK.to_dict()
SIGMA = 0.5
KNN_PARAMS: dict[str, Any] = {"sigma": SIGMA, "k": 5, "spread": 1.0}
ENSEMBLE_PARAMS: dict[str, Any] = {
    "sigma": SIGMA, "arch": "mlp", "alpha": 0.01, "bound": "clopper-pearson",
    "batch_size": 32, "models_per_task": 5,
}
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_command(*args: str) -> list[str]:
    """``rab serve`` / ``rab keys create`` of this interpreter (no installed script needed)."""
    return [sys.executable, "-m", "rab.cli.service", *args]


def _tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


def _create_key(env: dict[str, str], data_dir: Path) -> str:
    """A new API key in the embedded database (``rab keys create``; migrates it first)."""
    done = subprocess.run(
        _service_command("keys", "create", "--name", "demo", "--data-dir", str(data_dir)),
        env=env, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S, check=False,
    )
    if done.returncode != 0:
        error(f"`rab keys create` failed ({done.returncode}):\n{done.stderr[-3000:]}", 1)
    return done.stdout.strip().splitlines()[-1]


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``/healthz`` answers; fail with the log's end if the server dies or hangs."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with Client(url, None, timeout=5) as probe:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                error(f"`rab serve` exited with {process.returncode}:\n{_tail(log)}", 1)
            try:
                if probe.healthy():
                    return
            except UnreachableError:
                pass
            time.sleep(0.3)
    error(f"`rab serve` did not answer within {STARTUP_TIMEOUT_S:g} s:\n{_tail(log)}", 1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``rab serve`` (it stops its worker), then kill its process group if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            pass
    with suppress(ProcessLookupError):  # gone or hung: its worker must not outlive it
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def embedded_service(
    data_dir: Path, log: Path, port: int = 0, settings: Mapping[str, str] | None = None
) -> Iterator[tuple[str, str]]:
    """``rab serve`` on ``data_dir`` as a subprocess, with a new API key: yields (URL, key).

    Settings are the embedded defaults whatever ``RAB_*`` variables are set here, except the
    ``RAB_*`` ``settings`` given (e.g. ``{"RAB_CERTIFY_WAIT_S": "0"}``). The server runs in its
    own session, so a Ctrl-C reaches only this process, which then stops it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAB_")}
    env.update(settings or {})
    env["RAB_DATA_DIR"] = str(data_dir.resolve())
    key = _create_key(env, data_dir)
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            _service_command("serve", "--port", str(port), "--data-dir", str(data_dir)),
            env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_healthy(url, process, log)
        yield url, key
    finally:
        console.print("stopping the service ...")
        _stop(process)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _run_job(
    client: Client, dataset_id: str, method: Method, params: dict[str, Any], out: Path,
    timeout: float,
) -> None:
    """Submit one job under the demo's attack, wait with a progress bar, print and write its
    results as ``out/<method>.json`` and ``out/<method>-curve.png``."""
    job = client.submit_job(job_request(dataset_id, method, params, ATTACK))
    console.print(f"{method} job {job.id} submitted", highlight=False)
    job = wait_with_progress(client, job.id, timeout)
    write_results(client, job, out / f"{method}.json", out / f"{method}-curve.png")


def demo(
    output: Annotated[Path, typer.Option(help="Where the tables' JSON and the plots go.")]
    = Path("demo-output"),
    data_dir: Annotated[Path | None, typer.Option(
        help="Embedded-service directory to use and keep (default: a temporary one).",
        show_default=False)] = None,
    num_test: Annotated[int | None, typer.Option(
        help="Certify only the first N test points (default: all 72).", show_default=False)
    ] = None,
    num_models: Annotated[int, typer.Option(help="Ensemble models N.")] = 20,
    epochs: Annotated[int, typer.Option(help="Ensemble training epochs.")] = 5,
    port: Annotated[int, typer.Option(help="Port of the service (0: a free one).")] = 0,
    timeout: Annotated[float, typer.Option(help="Give up on a job after this many seconds.")]
    = 600.0,
) -> None:
    """Start the embedded service and certify digits 0 vs 1 under a backdoor, over its API:
    exact smoothed K-NN and a small ensemble; print the tables, write the plots."""
    require("service", "rab demo")
    require("torch", "the ensemble of rab demo")
    if num_test is not None and num_test < 1:
        error(f"--num-test must be at least 1, got {num_test}")
    if num_models < 1 or epochs < 1:
        error("--num-models and --epochs must be at least 1")
    output.mkdir(parents=True, exist_ok=True)
    own_dir = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="rab-demo-")) if data_dir is None else data_dir
    root.mkdir(parents=True, exist_ok=True)
    log = output / "service.log"
    extra = {} if num_test is None else {"num_test": num_test}
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.monotonic()
    try:
        console.print(f"starting the embedded service in {root} (log: {log}) ...",
                      highlight=False, soft_wrap=True)
        with embedded_service(root, log, port) as (url, key), connect(url, key) as client:
            console.print(f"service ready at {url}", highlight=False)
            dataset = client.builtin_dataset(DATASET, classes=CLASSES)
            console.print(f"dataset {dataset.id}: {dataset.name}, {dataset.train_size} train / "
                          f"{dataset.test_size} test", highlight=False)
            _run_job(client, dataset.id, "knn", {**KNN_PARAMS, **extra}, output, timeout)
            _run_job(client, dataset.id, "ensemble",
                     {**ENSEMBLE_PARAMS, "num_models": num_models, "epochs": epochs, **extra},
                     output, timeout)
    except KeyboardInterrupt:
        error("interrupted; the service was stopped", 130)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
    stdout.print(
        f"demo finished in {time.monotonic() - started:.0f} s; outputs in {output.resolve()}: "
        + ", ".join(sorted(p.name for p in output.iterdir())),
        highlight=False, soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the ``rab`` application."""
    app.command("demo")(demo)


if __name__ == "__main__":
    typer.run(demo)
