"""Service benchmark: latency and throughput of the certification API under concurrent clients.

Starts ``rab serve`` with a temporary data directory (``rab.cli.demo.embedded_service``: the API
plus its own Celery worker; SQLite and the filesystem broker by default, or PostgreSQL + Redis
with ``--database-url`` / ``--broker-url``, in a fresh database created and dropped here),
creates an API key, uploads Spambase (``spambase.data``, 80 % / 20 % split, seed 0) and runs an
exact smoothed K-NN job (Theorem 3; sigma = 1, K = 5, spread = 0.1, 200 test points) to
completion. Then, from ``--concurrency`` asyncio clients on loopback (default 32):

1. ``GET /v1/jobs/{id}/certificates/{index}`` (default 2,000 requests, indices cycling);
2. ``POST /v1/models/{id}/certify`` with one new Spambase input per request (default 200
   requests; rows of the file drawn by a seeded generator, label dropped), each a worker task.

Per endpoint: the status codes, p50 / p99 / mean / max latency (ms) of the 200 answers, and
throughput (requests/s over the wall time of the whole batch); status 0: no answer within 120 s
(that client then stops) or not sent. ``RAB_CERTIFY_WAIT_S`` is raised so that queued certify
requests answer 200 rather than 202. Writes ``bench/results/service.json``.

Usage: ``python bench/bench_service.py [--quick] [--requests N] [--certify-requests N]
[--concurrency C] [--certify-concurrency C]
[--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
--broker-url redis://127.0.0.1:6379/14]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from contract.api import job_request
from rab.cli.demo import embedded_service
from rab.client import Client

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "service.json"
KNN_PARAMS = {"sigma": 1.0, "k": 5, "spread": 0.1, "num_test": 200}
SPLIT = {"test_fraction": 0.2, "split_seed": 0}
JOB_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 120.0  # a client that gets no answer in time (status 0) stops sending
CERTIFY_WAIT_S = 500  # the service-side wait of POST /certify (queued requests must not 202)


def shared_data() -> Path:
    return Path(os.environ.get("RAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def service_processes(data_dir: Path) -> list[int]:
    """Pids of this user's processes started with ``RAB_DATA_DIR`` = ``data_dir``."""
    marker = f"RAB_DATA_DIR={data_dir.resolve()}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@contextmanager
def fresh_pg_database(server_url: str) -> Iterator[str]:
    """A new PostgreSQL database on the server of ``server_url``, dropped afterwards."""
    import sqlalchemy

    name = f"rab_bench_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sqlalchemy.make_url(server_url).set(database=name).render_as_string(
            hide_password=False
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def _load(
    base_url: str, key: str, requests: list[tuple[str, str, Any]], concurrency: int
) -> dict[str, Any]:
    """Send ``requests`` (method, path, JSON body) from ``concurrency`` clients sharing one
    connection pool; each client takes the next request when its previous one is answered."""
    latencies = np.zeros(len(requests))
    codes = np.zeros(len(requests), dtype=np.int64)
    queue = iter(range(len(requests)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-API-Key": key}, timeout=REQUEST_TIMEOUT_S, limits=limits
    ) as http:

        async def client() -> None:
            for i in queue:  # the shared iterator hands each index to exactly one client
                method, path, body = requests[i]
                start = time.perf_counter()
                try:
                    response = await http.request(method, path, json=body)
                except httpx.TransportError:
                    return  # no answer (status 0): a hung service ends the batch, bounded
                latencies[i] = time.perf_counter() - start
                codes[i] = response.status_code

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ok = latencies[codes == 200] * 1e3
    stats = {} if len(ok) == 0 else {
        "p50_ms": float(np.percentile(ok, 50)), "p99_ms": float(np.percentile(ok, 99)),
        "mean_ms": float(ok.mean()), "max_ms": float(ok.max()),
    }
    return {
        "requests": len(requests), "concurrency": concurrency, "ok": len(ok),
        "latency_of": "200 answers", **stats,
        "throughput_rps": len(requests) / wall, "ok_throughput_rps": len(ok) / wall,
        "wall_s": wall,
        "status_counts": {str(c): int(n) for c, n in Counter(codes.tolist()).items()},
    }


def run(args: argparse.Namespace, data_dir: Path, settings: dict[str, str]) -> dict[str, Any]:
    """Start the service, run the K-NN job, measure both endpoints; the result document."""
    spambase = shared_data() / "spambase.data"
    if not spambase.is_file():
        raise SystemExit(f"no Spambase at {spambase} (set RAB_SHARED_DATA)")
    rows = np.loadtxt(spambase, delimiter=",")[:, :-1]
    rng = np.random.default_rng(0)
    inputs = rows[rng.choice(len(rows), size=args.certify_requests, replace=True)]
    with embedded_service(data_dir, data_dir / "service.log", settings=settings) as (url, key):
        with Client(url, key, timeout=60) as client:
            dataset = client.upload_dataset(spambase, format="csv", options=SPLIT)
            started = time.monotonic()
            job = client.submit_job(job_request(dataset.id, "knn", KNN_PARAMS))
            job = client.wait(job.id, timeout=JOB_TIMEOUT_S)
            job_s = time.monotonic() - started
        assert job.model_id is not None
        num_test = int(KNN_PARAMS["num_test"])
        gets = [("GET", f"/v1/jobs/{job.id}/certificates/{i % num_test}", None)
                for i in range(args.requests)]
        posts = [("POST", f"/v1/models/{job.model_id}/certify", {"inputs": [x.tolist()]})
                 for x in inputs]
        get_result = asyncio.run(_load(url, key, gets, args.concurrency))
        certify_result = asyncio.run(_load(url, key, posts, args.certify_concurrency))
    return {
        "benchmark": "service latency and throughput on loopback",
        "backend": "postgresql+redis" if settings.get("RAB_DATABASE_URL") else "embedded",
        "dataset": {"name": "spambase", "train_size": dataset.train_size,
                    "test_size": dataset.test_size, **SPLIT},
        "knn_job": {"params": KNN_PARAMS, "seconds_submit_to_done": job_s},
        "get_certificate": get_result,
        "post_certify_one_input": certify_result,
        "certify_wait_s": CERTIFY_WAIT_S,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "note": "client, API and one worker process share this machine's CPUs",
    }


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run_and_write(
    run: Callable[[argparse.Namespace, Path, dict[str, str]], dict[str, Any]],
    args: argparse.Namespace, prefix: str, settings: dict[str, str], database_url: str | None,
) -> dict[str, Any]:
    """``run(args, data_dir, settings)`` in a fresh data directory (kept, and named, when it
    fails) against the embedded default or, with ``database_url``, a fresh PostgreSQL database
    and ``args.broker_url`` under a key prefix of its own; the result written to
    ``args.output`` as JSON and returned. SIGTERM stops the service too."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    database = nullcontext(None) if database_url is None else fresh_pg_database(database_url)
    try:
        with database as fresh_url:
            if fresh_url is not None:
                settings = {**settings, "RAB_DATABASE_URL": fresh_url,
                            "RAB_BROKER_URL": args.broker_url,
                            "RAB_BROKER_KEY_PREFIX": f"rabbench-{uuid.uuid4().hex[:8]}:"}
            result = run(args, data_dir, settings)
    except BaseException:
        print(f"failed; the service's data and log are kept in {data_dir}", file=sys.stderr)
        raise
    shutil.rmtree(data_dir, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="GET certificate requests")
    parser.add_argument("--certify-requests", type=int, default=200, help="POST certify requests")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument("--certify-concurrency", type=int,
                        help="concurrent certify clients (default: --concurrency)")
    parser.add_argument("--quick", action="store_true", help="200 GETs and 20 certify requests")
    parser.add_argument("--database-url", help="PostgreSQL server URL (a fresh database on it is "
                        "created and dropped), e.g. postgresql+psycopg://postgres@127.0.0.1:5432/"
                        "postgres")
    parser.add_argument("--broker-url", help="Redis URL, e.g. redis://127.0.0.1:6379/14")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.certify_requests = 200, 20
    args.certify_concurrency = args.certify_concurrency or args.concurrency
    if min(args.requests, args.certify_requests, args.concurrency,
           args.certify_concurrency) < 1:
        parser.error("request counts and concurrencies must be at least 1")
    if (args.database_url is None) != (args.broker_url is None):
        parser.error("--database-url and --broker-url go together")

    result = run_and_write(run, args, "rab-bench-service-",
                           {"RAB_CERTIFY_WAIT_S": str(CERTIFY_WAIT_S)}, args.database_url)
    for name in ("get_certificate", "post_certify_one_input"):
        r = result[name]
        print(f"{name}: {r['requests']} requests, {r['concurrency']} clients, "
              f"status {r['status_counts']}: p50 {r.get('p50_ms', float('nan')):.1f} ms, "
              f"p99 {r.get('p99_ms', float('nan')):.1f} ms, {r['throughput_rps']:.1f} req/s")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
