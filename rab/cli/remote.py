"""``rab submit``, ``rab status``, ``rab results``, ``rab jobs`` and ``rab cancel``: the
certification service from the shell.

They talk to a running service (``--url`` / ``RAB_URL``) with an API key (``--api-key`` /
``RAB_API_KEY``) through :class:`rab.client.Client`. The job id and the tables go to stdout,
progress and errors to stderr. Exit status: 0 success, 1 the job failed or was cancelled or the
service refused (not found, conflict, ...), 2 invalid input (ours or the service's 422),
3 the service could not be reached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, NoReturn, get_args

import typer
from rich.console import Console
from rich.markup import escape

from contract.api import JobKind, JobState, job_request
from rab.cli._common import (
    BAD_INPUT,
    attack_label,
    console,
    count_table,
    fail,
    parse_classes,
    print_records,
    progress_bar,
    results_table,
    timestamp,
)
from rab.client import (
    Client,
    Job,
    JobFailedError,
    ProblemError,
    Summary,
    UnreachableError,
    WaitTimeoutError,
)
from rab.client.api import Method
from rab.evaluation.attack import ATTACK_KINDS, NORM_FREE_KINDS

__all__ = [
    "cancel",
    "connect",
    "error",
    "jobs",
    "register",
    "results",
    "status",
    "submit",
    "wait_with_progress",
    "write_results",
]

#: Exit status when the job failed or the service refused the request.
FAILED = 1
#: Exit status when the service could not be reached.
UNREACHABLE = 3
DEFAULT_URL = "http://127.0.0.1:8000"

stdout = Console()

Url = Annotated[str, typer.Option("--url", envvar="RAB_URL", help="Base URL of the service.")]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", envvar="RAB_API_KEY", show_default=False,
                 help="API key (from `rab keys create`)."),
]
Timeout = Annotated[
    float | None,
    typer.Option(help="With --wait: give up after this many seconds (default: no limit).",
                 show_default=False),
]


def error(message: str, code: int = BAD_INPUT) -> NoReturn:
    """``fail`` with ``message`` printed literally (no rich markup in service details)."""
    fail(escape(message), code)


@contextmanager
def connect(url: str, api_key: str | None) -> Iterator[Client]:
    """A client of ``url``; expected failures become a message and an exit status."""
    if not api_key:
        error("no API key: pass --api-key or set RAB_API_KEY (create one with `rab keys create`)")
    try:
        client = Client(url, api_key)
    except ValueError as exc:
        error(f"--url: {exc}")
    try:
        with client:
            yield client
    except UnreachableError as exc:
        error(f"{exc}\nIs the service running (`rab serve`) and is --url / RAB_URL right?",
              UNREACHABLE)
    except ProblemError as exc:
        code = BAD_INPUT if exc.status in (400, 413, 422) else FAILED
        error(f"{exc.title} ({exc.status}): {exc.detail}", code)
    except (JobFailedError, WaitTimeoutError) as exc:
        error(str(exc), FAILED)
    except (ValueError, FileNotFoundError) as exc:
        error(str(exc))


def wait_with_progress(client: Client, job_id: str, timeout: float | None = None) -> Job:
    """Wait for a job with a live progress bar (phase, done/total, elapsed) on stderr."""
    with progress_bar() as report:

        def show(job: Job) -> None:
            p = job.progress
            done = p.total if job.state == "succeeded" else p.done
            report(f"{job.method} job {job.id}", done, p.total)

        return client.wait(job_id, timeout=timeout, on_progress=show)


def write_results(
    client: Client, job: Job, json_path: Path | None, plot_path: Path | None
) -> Summary:
    """Print a succeeded job's summary table; write its job+summary JSON and its plot PNG."""
    summary = client.summary(job.id)
    title = (f"job {job.id} | {job.method} sigma={job.params.get('sigma', 0)} | "
             f"{attack_label(job.attack)}")
    stdout.print(results_table(summary, title))
    counts = count_table(summary, f"job {job.id} | poison counts")
    if counts is not None:
        stdout.print(counts)
    if json_path is not None:
        record = {"job": job.model_dump(mode="json"),
                  "summary": summary.model_dump(mode="json", exclude_none=True)}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(record, indent=2) + "\n")
        stdout.print(f"wrote {json_path}", highlight=False)
    if plot_path is not None:
        png = client.curve_png(job.id)
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        plot_path.write_bytes(png)
        stdout.print(f"wrote {plot_path}", highlight=False)
    return summary


def _value(text: str) -> Any:
    """A JSON value (number, list, true/false/null) or else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items: list[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` items as a mapping (values parsed as JSON where possible)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            error(f"{option} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = _value(value.strip())
    return out


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def submit(
    dataset: Annotated[str, typer.Argument(
        help="An .npz / .csv file to upload, or a built-in name: digits, breast_cancer, "
             "spambase, mnist, mnist01, cifar.")],
    sigma: Annotated[float | None, typer.Option(
        help="Smoothing noise sigma (> 0; knn and ensemble).")] = None,
    method: Annotated[str, typer.Option(
        help="knn (exact smoothed K-NN), ensemble or partition (DPA / FA).")] = "knn",
    classes: Annotated[str | None, typer.Option(
        help="Classes to keep, comma-separated; the first becomes class 0.")] = None,
    train_size: Annotated[int | None, typer.Option(
        help="Built-in sets: seeded training subset.")] = None,
    test_size: Annotated[int | None, typer.Option(
        help="Built-in sets: seeded test subset.")] = None,
    file_format: Annotated[str | None, typer.Option(
        "--format", help="Uploads: npz or csv (default: the file's suffix).")] = None,
    dataset_option: Annotated[list[str] | None, typer.Option(
        help="Other dataset option KEY=VALUE (JSON value), e.g. split_seed=1; repeatable.")
    ] = None,
    k: Annotated[int | None, typer.Option(help="K-NN: neighbours K.")] = None,
    num_levels: Annotated[int | None, typer.Option(help="K-NN: distance levels L.")] = None,
    spread: Annotated[float | None, typer.Option(
        help="K-NN: edge spread (1.0 images, 0.1 Spambase).")] = None,
    num_models: Annotated[int | None, typer.Option(help="Ensemble: models N.")] = None,
    partitions: Annotated[int | None, typer.Option(
        help="Partition: number of content-hash partitions k.")] = None,
    aggregation: Annotated[str | None, typer.Option(
        help="Partition: dpa (Deep Partition Aggregation) or fa (Finite Aggregation).")] = None,
    fa_d: Annotated[int | None, typer.Option(
        help="Partition, fa: buckets per classifier d.")] = None,
    epochs: Annotated[int | None, typer.Option(
        help="Ensemble / partition: training epochs.")] = None,
    arch: Annotated[str | None, typer.Option(
        help="Ensemble / partition: mnist_cnn, preact_resnet, mlp or resnet18.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Ensemble: 1 - confidence level.")] = None,
    bound: Annotated[str | None, typer.Option(
        help="Ensemble: clopper-pearson (hard votes) or hoeffding (soft votes).")] = None,
    num_test: Annotated[int | None, typer.Option(
        help="Certify only the first N test points.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="Other job parameter KEY=VALUE (JSON value), e.g. lr=0.01; "
        "repeatable.")] = None,
    attack: Annotated[str, typer.Option(
        help=f"Backdoor trigger: none or one of {', '.join(ATTACK_KINDS)}.")] = "none",
    norm: Annotated[float, typer.Option(help="Trigger L2 norm ||delta||.")] = 0.1,
    rate: Annotated[float, typer.Option(help="Poisoning rate r_p.")] = 0.02,
    target: Annotated[int, typer.Option(help="Backdoor target class.")] = 0,
    poison_seed: Annotated[int | None, typer.Option(
        help="Seed drawing the poisoned rows (default: a fresh one, recorded).")] = None,
    train_seed: Annotated[int | None, typer.Option(
        help="Ensemble / partition: seed of the models' initialisation, noise and batch order "
             "(default: fresh, recorded).")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Resubmitting with the same key returns the first job.")] = None,
    wait: Annotated[bool, typer.Option(
        help="Wait with a progress bar, then print the results.")] = False,
    timeout: Timeout = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Upload (or name) a dataset and submit a certification job; prints the job id."""
    if method not in get_args(Method):
        error(f"--method must be one of {', '.join(get_args(Method))}, got {method!r}")
    if method != "partition" and sigma is None:
        error(f"the {method} method needs --sigma")
    if file_format not in (None, "npz", "csv"):
        error(f"--format must be npz or csv, got {file_format!r}")
    params = {
        **_given(sigma=sigma, k=partitions if method == "partition" else k,
                 num_levels=num_levels, spread=spread, num_models=num_models,
                 aggregation=aggregation, d=fa_d, epochs=epochs, arch=arch, alpha=alpha,
                 bound=bound, num_test=num_test, seed=train_seed),
        **_pairs(param or [], "--param"),
    }
    options = {
        **_given(classes=parse_classes(classes), train_size=train_size, test_size=test_size,
                 format=file_format),
        **_pairs(dataset_option or [], "--dataset-option"),
    }
    spec = None if attack == "none" else _given(
        kind=attack, norm=None if attack in NORM_FREE_KINDS else norm, rate=rate,
        target=target, seed=poison_seed,
    )
    with connect(url, api_key) as client:
        data = client.create_dataset(dataset, **options)
        console.print(f"dataset {data.id} ({data.name}): {data.train_size} train / "
                      f"{data.test_size} test, classes {list(data.class_names)}", highlight=False)
        job = client.submit_job(job_request(data.id, method, params, spec),
                                idempotency_key=idempotency_key)
        typer.echo(job.id)
        if wait:
            job = wait_with_progress(client, job.id, timeout)
            write_results(client, job, None, None)


def status(
    job_id: Annotated[str, typer.Argument(help="The job id printed by `rab submit`.")],
    wait: Annotated[bool, typer.Option(help="Wait with a progress bar until it ends.")] = False,
    timeout: Timeout = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """State, progress and error of a job."""
    with connect(url, api_key) as client:
        job = wait_with_progress(client, job_id, timeout) if wait else client.get_job(job_id)
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
        return
    p = job.progress
    lines = [
        f"job {job.id} ({job.kind}, {job.method})",
        f"state:    {job.state}",
        f"progress: {p.done}/{p.total} {p.phase}",
        f"attempts: {job.attempts}",
        f"created:  {timestamp(job.created_at)}",
    ]
    if job.started_at:
        lines.append(f"started:  {timestamp(job.started_at)}")
    if job.finished_at:
        lines.append(f"finished: {timestamp(job.finished_at)}")
    if job.error:
        lines.append(f"error:    {job.error}")
    stdout.print("\n".join(lines), highlight=False, markup=False)


def results(
    job_id: Annotated[str, typer.Argument(help="A succeeded job.")],
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Write the job and its summary to this JSON file.")] = None,
    plot: Annotated[Path | None, typer.Option(
        help="Write the certified-accuracy plot to this PNG file.")] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Summary metrics of a succeeded job as a table; optionally its JSON and plot."""
    with connect(url, api_key) as client:
        write_results(client, client.get_job(job_id), json_path, plot)


def jobs(
    state: Annotated[JobState | None, typer.Option(help="Only jobs in this state.")] = None,
    method: Annotated[Method | None, typer.Option(help="Only jobs of this method.")] = None,
    kind: Annotated[JobKind | None, typer.Option(help="Only evaluate or certify jobs.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only jobs on this dataset id.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many jobs.")] = 20,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """The key's jobs, newest first: state, progress, method and creation time."""
    with connect(url, api_key) as client:
        found = list(islice(client.jobs(state=state, method=method, kind=kind,
                                        dataset_id=dataset, page_size=min(limit, 1000)), limit))
    print_records(
        stdout, f"{len(found)} jobs (newest first)",
        ("id", "state", "progress", "method", "kind", "created"),
        ((j.id, j.state, f"{j.progress.done}/{j.progress.total} {j.progress.phase}", j.method,
          j.kind, timestamp(j.created_at)) for j in found),
    )


def cancel(
    job_id: Annotated[str, typer.Argument(help="The job to cancel.")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Cancel a queued or running job (exit 1 if it has already finished)."""
    with connect(url, api_key) as client:
        job = client.cancel_job(job_id)
    stdout.print(f"job {job.id} {job.state}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``submit``, ``status``, ``results``, ``jobs`` and ``cancel`` to the ``rab``
    application."""
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("results")(results)
    app.command("jobs")(jobs)
    app.command("cancel")(cancel)
