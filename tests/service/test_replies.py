"""Direct replies and the read path (``app.replies``, ``app.auth``, ``app.deps``), on real
PostgreSQL, Redis, uvicorn and worker processes: a certify request is woken by its job's
signal, not by polling; it still answers with its Redis gone (and goes back to signals when
Redis is back); a revoked key is refused at once by every API process although each caches
keys; and a read takes one connection from the pool, the key lookup included."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from app.auth import create_key as make_key
from app.auth import hash_key
from app.main import create_app
from app.settings import Settings

from .conftest import (
    REPO_ROOT,
    Service,
    create_key,
    fresh_pg_database,
    launch_service,
    serve_in_thread,
    service_cli,
    wait_for_job,
)
from .helpers import add_finished_job
from .private import private_redis

INPUTS = {"inputs": [[0.0] * 64]}  # one digits image (8 x 8)


def _knn_model(client: httpx.Client) -> str:
    """A K-NN model (exact, Theorem 3) of the built-in digits 0 vs 1: its path."""
    dataset = client.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]}).json()
    params = {"sigma": 1.0, "k": 3, "spread": 0.5, "num_test": 10}
    job = client.post(
        "/v1/jobs", json={"dataset_id": dataset["id"], "method": "knn", "params": params}
    ).json()
    done = wait_for_job(client, job["id"])
    assert done["state"] == "succeeded", done
    return str(done["links"]["model"])


def _replies(log: Path) -> list[str]:
    """How each logged certify request's wait ended (``reply``: signal, poll, deadline)."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line.get("reply", "") for line in lines
            if line.get("event") == "request" and line.get("path", "").endswith("/certify")]


def _certify(client: httpx.Client, model: str, times: int) -> None:
    for _ in range(times):
        answer = client.post(f"{model}/certify", json=INPUTS)
        assert answer.status_code == 200, answer.text


@pytest.mark.services
@pytest.mark.slow
def test_certify_replies_arrive_by_signal(client_a: httpx.Client, service: Service) -> None:
    model = _knn_model(client_a)
    _certify(client_a, model, 1)  # the model warms up
    started = time.perf_counter()
    _certify(client_a, model, 5)
    per_request_s = (time.perf_counter() - started) / 5
    replies = _replies(service.logs / "api.log")[-5:]
    # a signalled waiter reads its row only every RECHECK_S (1 s): a slow worker could make
    # one of five look like a poll on a busy machine, never most of them
    assert replies.count("signal") >= 4, replies
    assert per_request_s < 1.0


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.faults
def test_certify_answers_with_its_redis_gone_and_back(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """The signals' Redis (``RAB_REDIS_URL``, private) is killed and restarted; the broker
    (the shared Redis) stays."""
    with private_redis() as signals, fresh_pg_database(postgres_url) as database, \
            launch_service(tmp_path, database, redis_url, {"RAB_REDIS_URL": signals.url}) as svc:
        log = svc.logs / "api.log"
        with svc.client(create_key(svc.env, "signals")) as client:
            model = _knn_model(client)
            _certify(client, model, 2)
            assert _replies(log)[-1] == "signal"
            signals.stop()
            _certify(client, model, 3)
            assert _replies(log)[-3:] == ["poll"] * 3
            assert log.read_text().count("signals: Redis unreachable") == 1  # logged once
            signals.start()  # same port, empty
            deadline = time.monotonic() + 30  # the subscriber retries at most every 5 s
            while _replies(log)[-1] != "signal":
                assert time.monotonic() < deadline, _replies(log)[-5:]
                _certify(client, model, 1)
                time.sleep(0.5)


def _key_id(database_url: str, secret: str) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT id FROM api_keys WHERE key_hash = :h"),
                                    {"h": hash_key(secret)}).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.services
@pytest.mark.slow
def test_a_revocation_is_refused_at_once_by_every_api_process(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    ttl = {"RAB_KEY_CACHE_TTL_S": "600"}  # only a heard revocation can end a cached key
    with fresh_pg_database(postgres_url) as database, \
            launch_service(tmp_path, database, redis_url, ttl, worker=False) as svc:
        apis = [svc.base_url, svc.start_api("api-2")]
        revoked, kept = create_key(svc.env, "revoked"), create_key(svc.env, "kept")

        def status(url: str, key: str) -> int:
            return httpx.get(f"{url}/v1/jobs", headers={"X-API-Key": key}).status_code

        assert [status(u, k) for u in apis for k in (revoked, kept)] == [200] * 4
        import sqlalchemy

        engine = sqlalchemy.create_engine(database)
        with engine.begin() as conn:  # revoked behind the service's back: nothing published
            conn.execute(text("UPDATE api_keys SET revoked_at = now() WHERE key_hash = :h"),
                         {"h": hash_key(kept)})
        engine.dispose()
        assert [status(u, kept) for u in apis] == [200, 200]  # so both processes cache keys
        done = subprocess.run(
            service_cli("keys", "revoke", _key_id(database, revoked)), env=svc.env,
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True,
        )
        assert "warning" not in done.stderr
        assert [status(u, revoked) for u in apis] == [401, 401]


@pytest.mark.services
def test_a_read_takes_one_connection_with_its_key_lookup_and_one_certificate_none(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    with fresh_pg_database(postgres_url) as database:
        settings = Settings(database_url=database, broker_url=redis_url, data_dir=tmp_path,
                            broker_key_prefix=f"rabtest-{uuid.uuid4().hex[:8]}:")
        app = create_app(settings)
        with serve_in_thread(app) as url:
            db = app.state.db
            with db.session() as session:
                key, secret = make_key(session, "reader")
                job_id = add_finished_job(session, key.id, [dict(
                    sample_index=0, label=1, prediction=1, top_class=1, p_a=0.9, p_b=0.1,
                    radius=0.5, abstain=False, correct=True)])
            counts = {"checkouts": 0, "statements": 0}

            def count(name: str) -> Any:
                return lambda *_: counts.__setitem__(name, counts[name] + 1)

            event.listen(db.engine, "checkout", count("checkouts"))
            event.listen(db.engine, "before_cursor_execute", count("statements"))
            deadline = time.monotonic() + 10
            while not app.state.signals.live:  # the key cache is on once signals are heard
                assert time.monotonic() < deadline
                time.sleep(0.05)
            paths = [f"/v1/jobs/{job_id}/certificates/0", f"/v1/jobs/{job_id}/certificates",
                     f"/v1/jobs/{job_id}"]
            with httpx.Client(base_url=url, headers={"X-API-Key": secret}) as client:
                seen, bodies = [], []
                for path in [*paths, *paths]:  # first with the key read, then cached
                    before = dict(counts)
                    answer = client.get(path)
                    assert answer.status_code == 200, answer.text
                    seen.append({k: counts[k] - before[k] for k in counts})
                    bodies.append(answer.json())
            # one certificate is read from the event loop (app.fastreads: not this pool),
            # the key with it the first time; the other reads take one pooled connection each
            assert [s["checkouts"] for s in seen] == [0, 1, 1] * 2
            statements = [s["statements"] for s in seen]
            assert statements[0] == statements[3] == 0 and statements[1:3] == statements[4:]
            assert bodies[0] == {"index": 0, "subset": "clean", "label": 1, "prediction": 1,
                                 "top_class": 1, "p_a": 0.9, "p_b": 0.1, "radius": 0.5,
                                 "abstain": False, "correct": True, "poison_count": None,
                                 "poison_modifications": None, "count_prediction": None}
            assert bodies[:3] == bodies[3:]
