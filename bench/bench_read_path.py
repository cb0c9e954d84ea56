"""Read-path and direct-reply benchmark: the service against bare FastAPI endpoints, one run.

Starts the service on PostgreSQL + Redis (a fresh database; ``rab serve`` with
``--api-workers`` uvicorn workers and one Celery worker, as ``bench_service.py`` does: its
helpers are reused), uploads Spambase (80 % / 20 % split, seed 0) and runs the exact K-NN job
of ``bench_service.py`` (Theorem 3; sigma = 1, K = 5, spread = 0.1, 200 test points). Then:

1. ``GET /v1/jobs/{id}/certificates/{index}`` at 32 connections from ``wrk`` (Debian's C load
   generator, 2 threads, ``--duration`` seconds) against the service and against two anchors
   on the same database (``bench/anchors``: the same key check and certificate read, with sync
   SQLAlchemy, and with asyncpg + orjson), each with the same number of uvicorn workers,
   served as ``rab serve`` serves the API (``rab.cli.service.serve_processes``: TCP_NODELAY);
   interleaved rounds, medians of ``--rounds`` (5). Ratios to the async anchor; targets:
   throughput >= 0.6x, p99 <= 2x.
2. ``POST /v1/models/{id}/certify`` with one Spambase input (the same row each time), from
   ``wrk`` too (a Lua script sets the JSON body, so that the client's own CPU does not come out
   of the two cores the service runs on): sequential (one connection) and at 32 connections,
   ``--duration`` seconds each, interleaved over ``--rounds`` with the library's own time for
   that input (``rab.evaluation.certify_test_sets``, the worker's call, on the same split;
   median of 20 after a warm-up) and its throughput on a batch of 32 such inputs in one call
   (the most one worker could serve: the exact K-NN's cost per input barely falls in a batch);
   medians of the rounds; targets p50 <= 3x the library's, 32-client throughput >= 150 req/s.
   The sequential ratio is each round's p50 over the library's time measured just before and
   just after that run (their mean), the median of the rounds' ratios: this shared machine's
   speed changes within seconds (the library's own time for one input varied 4.3 - 9.7 ms
   within ten minutes), so a ratio is taken between figures measured together (the ratio of the
   medians is reported beside it). During each run the CPU time of every part of the
   deployment is read from /proc (the API processes, the worker's main and pool processes,
   PostgreSQL, Redis, wrk) and reported per request (less noisy than a latency on this shared
   machine: each round's sequential PostgreSQL figure shows whether the 32-client rounds
   before it left the tables slower to read, ``app.upkeep``), and at 32 clients with the rate
   at which this machine's cores could serve requests costing that much (``cores_limit_rps``);
   and the 32-client p50 is also compared with the library's time for the 32 inputs those
   clients have in flight.

Writes ``bench/results/read_path.json``. Usage: ``python bench/bench_read_path.py
[--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
[--broker-url redis://127.0.0.1:6379/13] [--api-workers 2] [--rounds 5] [--duration 5]
[--quick] [--only all|get|certify]``; ``--only`` measures one part
and keeps the other part of the JSON as it was (each part names the command that measured it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_service import (
    KNN_PARAMS,
    SPLIT,
    fresh_pg_database,
    service_processes,
    shared_data,
)

from app.datasets import dataset_from_file
from contract.api import INPUTS, DatasetOptions, job_request
from contract.jobs import evaluation_request
from rab.cli.demo import _free_port, embedded_service
from rab.client import Client
from rab.evaluation import TestSet, certify_test_sets

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "read_path.json"
ANCHORS = ROOT / "bench" / "anchors"
CONNECTIONS = 32
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, key: str, duration: float, connections: int = CONNECTIONS,
        body: Any = None) -> dict[str, float]:
    """One ``wrk`` run (2 threads, 1 for one connection): requests/s and latency p50 / p99
    (ms); non-2xx answers and socket errors counted. ``body``: POSTed as JSON (a Lua script
    sets it), else GET."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        options = []
        if body is not None:
            script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                         f"wrk.body = [==[{json.dumps(body)}]==]\n")
            script.flush()
            options = ["-s", script.name]
        out = subprocess.run(
            ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration:g}s",
             "--latency", "--timeout", "60s", *options, "-H", f"X-API-Key: {key}", url],
            capture_output=True, text=True, check=True, timeout=duration + 120,
        ).stdout

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * _UNITS[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return {
        "throughput_rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency("50"), "p99_ms": latency("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sum(map(int, socket.groups())) if socket else 0,
    }


#: An anchor served as the service is (``rab.cli.service.serve_processes``: TCP_NODELAY on
#: its connections; uvicorn's own command line leaves every kept-alive answer 40 ms late).
_ANCHOR_SERVER = (
    f"import sys; sys.path.insert(0, {str(ANCHORS)!r}); "
    "from rab.cli.service import serve_processes; "
    "serve_processes(sys.argv[1] + ':app', '127.0.0.1', int(sys.argv[2]), int(sys.argv[3]), "
    "log_level='warning', access_log=False)"
)


@contextmanager
def anchor(module: str, database_url: str, workers: int, log: Path) -> Iterator[str]:
    """An anchor app under uvicorn: its base URL while it runs."""
    port = _free_port()
    env = {**os.environ, "ANCHOR_DATABASE_URL": database_url}
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", _ANCHOR_SERVER, module, str(port), str(workers)],
            env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/docs", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"anchor {module} did not start: {log.read_text()}") \
                        from None
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _cpu_seconds(data_dir: Path) -> dict[str, float]:
    """CPU seconds used so far by each part of the deployment on this machine, from /proc: the
    service's API processes and its worker's main process (which runs the tasks too in a
    worker of one: ``rab.cli.service.worker_command``) and pool processes (of a worker of
    several), those started on ``data_dir``; PostgreSQL and Redis; and this process's finished
    children (wrk)."""
    tick, parts = os.sysconf("SC_CLK_TCK"), dict.fromkeys(CPU_PARTS, 0.0)

    def read(pid: int | str) -> tuple[str, str, float]:  # command line, parent, CPU seconds
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return command, fields[1], (int(fields[11]) + int(fields[12])) / tick

    service = set(service_processes(data_dir))
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command, parent, used = read(pid)
            if int(pid) in service and "celery" in command:
                pool = "celery" in read(parent)[0]
                parts["worker pool processes" if pool else "worker main process"] += used
            elif int(pid) in service:
                parts["API"] += used
            elif command.startswith("postgres") or "postgres:" in command:
                parts["PostgreSQL"] += used
            elif "redis-server" in command:
                parts["Redis"] += used
        except OSError:  # gone meanwhile
            continue
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    parts["wrk"] = children.ru_utime + children.ru_stime
    return parts


CPU_PARTS = ("worker pool processes", "worker main process", "API", "PostgreSQL", "Redis", "wrk")


def wrk_with_cpu(url: str, key: str, duration: float, connections: int, body: Any,
                 data_dir: Path) -> dict[str, Any]:
    """:func:`wrk`, with the CPU milliseconds each part of the deployment (the service's on
    ``data_dir``) spent per request meanwhile (and their sum: what one request costs the
    machine's cores)."""
    before = _cpu_seconds(data_dir)
    run = wrk(url, key, duration, connections, body)
    after = _cpu_seconds(data_dir)
    requests = run["throughput_rps"] * duration
    per_request = {part: 1e3 * (after[part] - before[part]) / requests for part in CPU_PARTS}
    return {**run, "cpu_ms_per_request": {**per_request, "all": sum(per_request.values())}}


def library_ms(train: Any, method: Any, x: np.ndarray, repeats: int = 20) -> float:
    """The library's own time to certify the inputs ``x`` (one per row; the worker's call, same
    split): the median of ``repeats`` calls, in ms."""
    inputs = (TestSet(INPUTS, x.astype(np.float32), None),)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        certify_test_sets(train, inputs, method)
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure of the runs (of each part's, for a figure by part)."""
    def median(key: str) -> Any:
        if isinstance(runs[0][key], dict):
            return {part: statistics.median(r[key][part] for r in runs) for part in runs[0][key]}
        return statistics.median(r[key] for r in runs)

    return {**{k: median(k) for k in runs[0]}, "runs": runs}


def measure(args: argparse.Namespace, data_dir: Path, database_url: str) -> dict[str, Any]:
    spambase = shared_data() / "spambase.data"
    settings = {
        "RAB_CERTIFY_WAIT_S": "120", "RAB_DATABASE_URL": database_url,
        "RAB_BROKER_URL": args.broker_url, "RAB_API_WORKERS": str(args.api_workers),
        "RAB_BROKER_KEY_PREFIX": f"rabbench-{uuid.uuid4().hex[:8]}:",
    }
    x = np.loadtxt(spambase, delimiter=",")[:, :-1][np.random.default_rng(0).integers(4601)]
    with embedded_service(data_dir, data_dir / "service.log", settings=settings) as (url, key):
        with Client(url, key, timeout=60) as client:
            dataset = client.upload_dataset(spambase, format="csv", options=SPLIT)
            job = client.wait(client.submit_job(job_request(dataset.id, "knn", KNN_PARAMS)).id,
                              timeout=600)
        assert job.model_id is not None
        out: dict[str, Any] = {}
        if args.only in ("all", "get"):
            out["get_certificate"] = measure_get(args, data_dir, database_url, url, key, job.id)
        if args.only in ("all", "certify"):
            out["knn_certify_one_input"] = measure_certify(
                args, f"{url}/v1/models/{job.model_id}/certify", key, spambase, job.params, x,
                data_dir)
    return out


def measure_certify(args: argparse.Namespace, url: str, key: str, spambase: Path,
                    params: dict[str, Any], x: np.ndarray, data_dir: Path) -> dict[str, Any]:
    """``POST`` one input to ``url`` (a K-NN model's certify) from ``wrk``, sequential and at
    32 connections, interleaved with the library's own time for it; medians of the rounds."""
    train = dataset_from_file(spambase, "csv", spambase.name, DatasetOptions(**SPLIT), 2**30)
    method = evaluation_request("knn", params, None).method
    body = {"inputs": [x.tolist()]}
    answer = httpx.post(url, json=body, headers={"X-API-Key": key}, timeout=60)
    assert answer.status_code == 200, answer.text
    one, batch = x[None], np.repeat(x[None], CONNECTIONS, axis=0)
    library_ms(train, method, one, 3)  # warm-up: the shared chi-square table
    wrk(url, key, 2, 1, body)  # warm-up of the service: the model gets hot
    runs: dict[str, list[Any]] = {"library_ms": [], "library_batch_ms": [], "sequential": [],
                                  "clients_32": []}
    ratios: list[float] = []  # each round's sequential p50 over the library's time around it
    for _ in range(args.rounds):
        before = library_ms(train, method, one)
        runs["sequential"].append(wrk_with_cpu(url, key, args.duration, 1, body, data_dir))
        runs["library_ms"].append(statistics.mean([before, library_ms(train, method, one)]))
        ratios.append(runs["sequential"][-1]["p50_ms"] / runs["library_ms"][-1])
        runs["clients_32"].append(
            wrk_with_cpu(url, key, args.duration, CONNECTIONS, body, data_dir))
        runs["library_batch_ms"].append(library_ms(train, method, batch, 5))
    library = statistics.median(runs["library_ms"])
    batch_ms = statistics.median(runs["library_batch_ms"])
    ceiling = 1e3 * CONNECTIONS / batch_ms
    sequential, parallel = _median(runs["sequential"]), _median(runs["clients_32"])
    return {
        "load": "wrk (C), POST of one Spambase row as JSON; sequential: 1 connection",
        "duration_s": args.duration, "rounds": args.rounds,
        "library_ms": {"median_ms": library, "runs": runs["library_ms"]},
        # the most inputs per second one worker could certify at 32 clients: the library's own
        # throughput on the batches a worker makes of them (32 inputs in one call, one core)
        "library_batch_of_32": {"ms": runs["library_batch_ms"], "inputs_per_s": ceiling},
        "sequential": sequential, "clients_32": parallel,
        "throughput_32_over_library_ceiling": parallel["throughput_rps"] / ceiling,
        "p50_over_library": {"sequential": statistics.median(ratios),
                             "sequential_rounds": ratios,
                             "sequential_medians": sequential["p50_ms"] / library,
                             "clients_32": parallel["p50_ms"] / library},
        # at 32 clients each request waits for the 32 inputs in flight: the library's own time
        # for those (one call) is the p50's floor there
        "p50_32_over_library_batch_of_32": parallel["p50_ms"] / batch_ms,
        # the rate the machine's cores could serve if all went to requests at this cost each
        "cores_limit_rps": 1e3 * (os.cpu_count() or 1)
        / parallel["cpu_ms_per_request"]["all"],
        "targets": {"p50_over_library": "<= 3", "throughput_32_rps": ">= 150"},
        "met": {"sequential": statistics.median(ratios) <= 3,
                "clients_32": parallel["p50_ms"] <= 3 * library,
                "throughput_32_rps": parallel["throughput_rps"] >= 150},
    }


def measure_get(args: argparse.Namespace, data_dir: Path, database_url: str, url: str,
                key: str, job_id: str) -> dict[str, Any]:
    """``GET`` one certificate of job ``job_id``: the service at ``url`` against both anchors
    on the same database, interleaved ``wrk`` rounds; medians and ratios to the async one."""
    path = f"/v1/jobs/{job_id}/certificates/7"
    runs: dict[str, list[dict[str, float]]] = {"service": [], "sync_anchor": [],
                                               "async_anchor": []}
    with anchor("sync_app", database_url, args.api_workers, data_dir / "sync.log") as s, \
            anchor("async_app", database_url, args.api_workers, data_dir / "async.log") as a:
        targets = {"service": url, "sync_anchor": s, "async_anchor": a}
        for name, base in targets.items():  # each answers the same document
            answer = httpx.get(base + path, headers={"X-API-Key": key})
            assert answer.status_code == 200, (name, answer.text)
            wrk(base + path, key, 1)  # warm-up
        for _ in range(args.rounds):
            for name, base in targets.items():
                runs[name].append(wrk(base + path, key, args.duration))
    reads = {name: _median(r) for name, r in runs.items()}
    fastest = reads["async_anchor"]
    ratios = {name: {"throughput": r["throughput_rps"] / fastest["throughput_rps"],
                     "p99": r["p99_ms"] / fastest["p99_ms"]} for name, r in reads.items()}
    return {"connections": CONNECTIONS, "duration_s": args.duration, "rounds": args.rounds,
            "medians": reads, "ratios_to_async_anchor": ratios,
            "targets": {"throughput": ">= 0.6", "p99": "<= 2"},
            "met": {"throughput": ratios["service"]["throughput"] >= 0.6,
                    "p99": ratios["service"]["p99"] <= 2}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url",
                        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument("--only", choices=("all", "get", "certify"), default="all",
                        help="measure one part; the other part of --output is kept")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 2.0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    data_dir = Path(tempfile.mkdtemp(prefix="rab-bench-read-"))
    with fresh_pg_database(args.database_url) as database_url:
        result = measure(args, data_dir, database_url)
    shutil.rmtree(data_dir, ignore_errors=True)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    for part in result.values():
        part["command"] = command
    if args.only != "all" and args.output.is_file():  # keep the part not measured now
        kept = json.loads(args.output.read_text())
        for name in ("get_certificate", "knn_certify_one_input"):
            if name in kept and name not in result:
                result[name] = {"command": kept.get("command"), **kept[name]}
    result.update({
        "benchmark": "read path and direct replies, service vs bare FastAPI anchors",
        "backend": "postgresql+redis", "api_workers": args.api_workers,
        "command": command,
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "note": "wrk, the API, the anchors, PostgreSQL, Redis and one Celery worker share "
                "this machine's CPUs; each part records the command that measured it",
    })
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    reads = result.get("get_certificate", {})
    for name, r in reads.get("medians", {}).items():
        ratio = reads["ratios_to_async_anchor"][name]
        print(f"GET certificate {name}: {r['throughput_rps']:.0f} req/s, p50 {r['p50_ms']:.1f} "
              f"ms, p99 {r['p99_ms']:.1f} ms ({ratio['throughput']:.2f}x / {ratio['p99']:.2f}x)")
    knn = result.get("knn_certify_one_input")
    if knn is not None:
        print(f"K-NN certify: library {knn['library_ms']['median_ms']:.1f} ms; sequential p50 "
              f"{knn['sequential']['p50_ms']:.1f} ms; 32 clients p50 "
              f"{knn['clients_32']['p50_ms']:.1f} ms, {knn['clients_32']['throughput_rps']:.0f}"
              f" req/s (library on batches of 32: {knn['library_batch_of_32']['inputs_per_s']:.0f}"
              f" inputs/s); CPU per request at 32 clients "
              f"{knn['clients_32']['cpu_ms_per_request']['all']:.1f} ms (the cores' limit "
              f"{knn['cores_limit_rps']:.0f} req/s)")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
