"""Jobs always finish: a database restarted mid-job, a broker restarted without persistence,
a whole worker SIGKILLed with the DEFAULT (6 h) visibility timeout, three worker losses in
three chunks of one job, the embedded mode's local worker killed, the database crashed just
after batches of certify jobs were answered, a burst of certify requests (one message for
all) whose message was lost or whose worker died; on Redis and on RabbitMQ.

Every disturbed job completes within RECOVERY_S with exactly N members and certificates
identical to an undisturbed run of the same request (same seeds) on the same deployment. The
servers these tests stop are private instances (``tests/service/private.py``), never the
machine's shared ones."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from contract.messaging import CERTIFY_TASK

from .conftest import (
    REPO_ROOT,
    Service,
    create_key,
    free_port,
    launch_service,
    service_cli,
    stop,
    wait_healthy,
)
from .flow import all_certificates
from .private import private_postgres, private_redis, rabbitmq_vhost

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.faults]

RECOVERY_S = 120  # the bound: a job finishes within this of its disturbance
LEASES = {
    "RAB_LEASE_S": "3", "RAB_REAP_INTERVAL_S": "1", "RAB_RESEND_AFTER_S": "6",
    "RAB_VISIBILITY_TIMEOUT_S": "21600",  # the default: a dead worker's message stays away
    "RAB_BROKER_TRANSPORT_OPTIONS": "{}", "RAB_TRAIN_BATCH": "1",
    # three losses may all land on one unit (which one a new worker takes first is timing):
    # one attempt more than that, so that the job must complete, not give up
    "RAB_MAX_JOB_ATTEMPTS": "4",
}
KNN = {"sigma": 1.0, "k": 5, "spread": 0.1, "num_test": 300}
KNN_ATTACK = {"kind": "one_pixel", "norm": 0.1, "rate": 0.02, "target": 0, "seed": 4}
# 100 epochs: a member takes about a second to train here, so that a fault lands while the
# job runs (at 8 epochs a member took 70 ms and a job could finish between two polls)
ENSEMBLE = {"sigma": 0.5, "num_models": 6, "models_per_task": 2, "arch": "mlp", "epochs": 100,
            "batch_size": 16, "alpha": 0.05, "num_test": 12, "seed": 9}


class Deployment:
    """A service on a private PostgreSQL and a private broker, with one API key."""

    def __init__(self, service: Service, postgres: Any, redis: Any) -> None:
        self.service, self.postgres, self.redis = service, postgres, redis
        self.key = create_key(service.env, "faults")
        self.datasets: dict[str, str] = {}

    def client(self) -> httpx.Client:
        return self.service.client(self.key)

    def dataset(self, builtin: str, **options: Any) -> str:
        if builtin not in self.datasets:
            with self.client() as client:
                answer = client.post("/v1/datasets", json={"builtin": builtin, **options})
                assert answer.status_code in (200, 201), answer.text
                self.datasets[builtin] = answer.json()["id"]
        return self.datasets[builtin]


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"faults-{request.param}")
    with private_postgres() as postgres:
        if request.param == "redis":
            with private_redis() as redis, launch_service(
                root, postgres.url, redis.url, LEASES
            ) as service:
                yield Deployment(service, postgres, redis)
        else:
            with rabbitmq_vhost() as amqp, launch_service(
                root, postgres.url, amqp, {**LEASES, "RAB_BROKER_KEY_PREFIX": ""}
            ) as service:
                yield Deployment(service, postgres, None)


def _job(client: httpx.Client, job_id: str) -> dict[str, Any] | None:
    """The job, or None while the service answers 503 (its database is away)."""
    try:
        answer = client.get(f"/v1/jobs/{job_id}")
    except httpx.HTTPError:
        return None
    if answer.status_code == 503:
        return None
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def _until(client: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool],
           timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(client, job_id)
        if job is not None and done(job):
            return job
        if job is not None and job["state"] in ("failed", "cancelled"):
            pytest.fail(f"job {job_id} {job['state']}: {job['error']}")
        time.sleep(0.2)
    pytest.fail(f"job {job_id} not there after {timeout} s: {_job(client, job_id)}")


def _submit(deployment: Deployment, method: str) -> str:
    body: dict[str, Any]
    if method == "knn":
        body = {"dataset_id": deployment.dataset("spambase"), "method": "knn", "params": KNN,
                "attack": KNN_ATTACK}
    else:
        body = {"dataset_id": deployment.dataset("digits", classes=[0, 1]),
                "method": "ensemble", "params": ENSEMBLE}
    with deployment.client() as client:
        answer = client.post("/v1/jobs", json=body)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])


def _results(deployment: Deployment, job_id: str) -> dict[str, Any]:
    """Certificates of every subset and the members' hashes of a succeeded job."""
    with deployment.client() as client:
        job = _until(client, job_id, lambda j: j["state"] == "succeeded", RECOVERY_S)
        model = client.get(job["links"]["model"]).json()
        subsets = ("clean", "backdoor") if job["attack"] else ("clean",)
        return {
            "certificates": {s: all_certificates(client, job_id, s) for s in subsets},
            "members": [m["state_sha256"] for m in model["members"]],
        }


_REFERENCES: dict[tuple[int, str], dict[str, Any]] = {}


def _reference(deployment: Deployment, method: str) -> dict[str, Any]:
    """The undisturbed run of the same request on this deployment."""
    key = (id(deployment), method)
    if key not in _REFERENCES:
        _REFERENCES[key] = _results(deployment, _submit(deployment, method))
    return _REFERENCES[key]


def _disturbed(deployment: Deployment, method: str, when: Callable[[dict[str, Any]], bool],
               fault: Callable[[], None]) -> None:
    """Run the request, cause ``fault`` once the job satisfies ``when``, and check that it
    completes within RECOVERY_S with the undisturbed run's members and certificates."""
    reference = _reference(deployment, method)
    job_id = _submit(deployment, method)
    with deployment.client() as client:
        _until(client, job_id, when, RECOVERY_S)
    fault()
    started = time.monotonic()
    got = _results(deployment, job_id)
    assert time.monotonic() - started < RECOVERY_S
    if method == "ensemble":
        assert len(got["members"]) == ENSEMBLE["num_models"]
    assert got == reference


def _running_with(done: int) -> Callable[[dict[str, Any]], bool]:
    return lambda job: job["state"] == "running" and job["progress"]["done"] >= done


def _restart_postgres(deployment: Deployment) -> None:
    deployment.postgres.stop()
    time.sleep(3)
    deployment.postgres.start()


@pytest.mark.parametrize("repeat", [1, 2])
def test_postgres_restarted_mid_knn(deployment: Deployment, repeat: int) -> None:
    _disturbed(deployment, "knn", _running_with(16), lambda: _restart_postgres(deployment))


@pytest.mark.parametrize("repeat", [1, 2])
def test_postgres_restarted_mid_ensemble(deployment: Deployment, repeat: int) -> None:
    _disturbed(deployment, "ensemble", _running_with(1), lambda: _restart_postgres(deployment))


@pytest.mark.parametrize("deployment", ["redis"], indirect=True)
@pytest.mark.parametrize("repeat", [1, 2])
def test_redis_restarted_without_persistence(deployment: Deployment, repeat: int) -> None:
    def restart() -> None:
        deployment.redis.stop()
        deployment.redis.start()

    _disturbed(deployment, "ensemble", _running_with(1), restart)


CONCURRENT_CERTIFY = 6
CRASH_ROUNDS = 5  # rounds to see a batched job's success lost (a later durable commit, e.g.
# a worker's presence row, may write it out before the crash: then nothing is lost)


def _certify_together(deployment: Deployment, model: str, rng: np.random.Generator
                      ) -> dict[str, Any]:
    """CONCURRENT_CERTIFY certify requests at once, each one new input: the answers by job."""
    inputs = rng.uniform(0, 1, size=(CONCURRENT_CERTIFY, 1, 57)).round(3).tolist()

    def post(x: list[list[float]]) -> dict[str, Any]:
        with deployment.client() as client:
            answer = client.post(f"{model}/certify", json={"inputs": x})
            assert answer.status_code == 200, answer.text
            return answer.json()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(CONCURRENT_CERTIFY) as pool:
        return {a["job_id"]: a["certificates"] for a in pool.map(post, inputs)}


#: How far a rerun's certificate may move (``tests/test_knn.py``'s batch tests use the same):
#: a K-NN row's last bits depend on which rows share its dynamic programme
#: (``rab.knn.exact._solve_batch``) and a rerun batches differently, a few units of 1e-16 in a
#: probability, which Phi^-1 near pA = 1 turns into up to a few 1e-9 of the radius.
_PROBABILITY_TOL, _RADIUS_RTOL = 1e-12, 1e-6


def _differences(got: list[dict[str, Any]], answered: list[dict[str, Any]]) -> list[str]:
    """The fields in which the rerun's certificates differ from those answered (empty: the
    same): every field equal but the probabilities and radius, within the rounding above."""
    if len(got) != len(answered):
        return [f"{len(got)} certificates, {len(answered)} answered"]
    out = []
    for g, a in zip(got, answered, strict=True):
        for field in sorted(set(g) | set(a)):
            mine, theirs = g.get(field), a.get(field)
            if field in ("p_a", "p_b"):
                same = math.isclose(mine, theirs, rel_tol=0.0, abs_tol=_PROBABILITY_TOL)
            elif field == "radius":
                same = math.isclose(mine, theirs, rel_tol=_RADIUS_RTOL, abs_tol=1e-12)
            else:
                same = mine == theirs
            if not same:
                out.append(f"input {a.get('index')}: {field} {mine!r} against {theirs!r}")
    return out


def test_postgres_crash_loses_a_batch_of_certify_successes(deployment: Deployment) -> None:
    """PostgreSQL crashes (immediate shutdown) right after concurrent certify requests were
    answered: the worker committed their batches' successes without waiting for the disk, so
    the crash may lose them. Every job is then run again (the reaper re-sends it) and ends
    succeeded with the certificates its request was answered with; the rounds go on until a
    job the worker had finished in another job's batch was among those lost."""
    with deployment.client() as client:
        job = _until(client, _submit(deployment, "knn"), lambda j: j["state"] == "succeeded",
                     RECOVERY_S)
    model, rng = job["links"]["model"], np.random.default_rng(11)
    lost_in_batches = 0
    for _ in range(CRASH_ROUNDS):
        answers = _certify_together(deployment, model, rng)
        with deployment.client() as client:  # reads: they write nothing out
            first_of = {j: client.get(f"/v1/jobs/{j}/summary").json()["batch"]["first_job"]
                        for j in answers}
        deployment.postgres.crash()
        deployment.postgres.start()
        with deployment.client() as client:
            lost = {j for j in answers  # each as first read once the database is back
                    if _until(client, j, lambda _: True, RECOVERY_S)["state"] != "succeeded"}
            for job_id, certificates in answers.items():
                done = _until(client, job_id, lambda j: j["state"] == "succeeded", RECOVERY_S)
                assert done["attempts"] >= 1
                assert not _differences(all_certificates(client, job_id, "inputs"),
                                        certificates)
        lost_in_batches += sum(first_of[j] != j for j in lost)
        if lost_in_batches:
            break
    assert lost_in_batches, f"no batched job's success was lost in {CRASH_ROUNDS} crashes"


BURST = 8  # concurrent certify requests: one message for the first, none for the others


def _knn_model(deployment: Deployment) -> str:
    with deployment.client() as client:
        job = _until(client, _submit(deployment, "knn"), lambda j: j["state"] == "succeeded",
                     RECOVERY_S)
    return str(job["links"]["model"])


def _burst(deployment: Deployment, model: str, inputs: np.ndarray,
           fault: Callable[[Callable[[], list[str]]], None]) -> None:
    """BURST certify requests at once for ``model``, one slice of ``inputs`` each; ``fault``
    is caused once every one of their jobs exists, given a function that reads their states.
    Every request is answered within RECOVERY_S of the fault with the certificates one
    undisturbed request for all the inputs gets."""
    parts = np.array_split(inputs, BURST)

    def post(x: np.ndarray) -> list[dict[str, Any]]:
        with deployment.client() as client:
            answer = client.post(f"{model}/certify", json={"inputs": x.tolist()},
                                 timeout=RECOVERY_S + 60)
            assert answer.status_code == 200, answer.text
            return answer.json()["certificates"]

    def certify_jobs() -> list[dict[str, Any]]:
        return client.get("/v1/jobs", params={"kind": "certify", "limit": 100}).json()["items"]

    with deployment.client() as client, ThreadPoolExecutor(BURST) as pool:
        before = {j["id"] for j in certify_jobs()}
        answers = [pool.submit(post, x) for x in parts]

        def states() -> list[str]:
            return [j["state"] for j in certify_jobs() if j["id"] not in before]

        deadline = time.monotonic() + RECOVERY_S
        while len(states()) < BURST and time.monotonic() < deadline:
            time.sleep(0.05)
        fault(states)
        started = time.monotonic()
        got = [c for a in answers for c in a.result(timeout=RECOVERY_S + 60)]
        assert time.monotonic() - started < RECOVERY_S
        reference = client.post(f"{model}/certify", json={"inputs": inputs.tolist()}).json()
    assert len(got) == len(inputs)
    assert not _differences([{**c, "index": i} for i, c in enumerate(got)],
                            [{**c, "index": i} for i, c in enumerate(reference["certificates"])])


@pytest.mark.parametrize("deployment", ["redis"], indirect=True)
def test_a_certify_burst_whose_one_message_the_broker_lost(deployment: Deployment) -> None:
    """No worker runs while a burst of certify requests arrives: the first sends a message,
    the others, finding it waiting, none (``app.certify_queue``). Redis restarts without
    persistence and loses that message; a new worker has nothing to consume until the reaper
    sends the waiting jobs again, and every request is answered."""
    model = _knn_model(deployment)
    deployment.service.kill_worker()
    inputs = np.random.default_rng(5).uniform(0, 1, size=(BURST, 57)).round(3)

    def lose_the_message(states: Callable[[], list[str]]) -> None:
        assert states() == ["queued"] * BURST
        deployment.redis.stop()
        deployment.redis.start()
        deployment.service.start_worker()

    _burst(deployment, model, inputs, lose_the_message)


def test_a_worker_killed_while_it_serves_a_certify_burst(deployment: Deployment) -> None:
    """The worker dies while it certifies a burst of requests (large enough to take a few
    seconds), the jobs it holds running under leases, others waiting without messages of
    their own: its replacement answers every request (the reaper re-queues the expired
    leases and re-sends the waiting jobs)."""
    model = _knn_model(deployment)
    inputs = np.random.default_rng(6).uniform(0, 1, size=(40 * BURST, 57)).round(3)

    def kill_while_serving(states: Callable[[], list[str]]) -> None:
        deadline = time.monotonic() + RECOVERY_S
        while "running" not in states() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "running" in states() and "succeeded" not in states()
        _replace_worker(deployment)

    _burst(deployment, model, inputs, kill_while_serving)


def test_a_worker_killed_while_it_certifies_a_lone_request_unclaimed(
    deployment: Deployment,
) -> None:
    """The worker dies while it certifies a lone request for a hot model from the inputs its
    message carried, before any claim (``workers.tasks._certify_unclaimed``): nothing of it
    was written and the job still waits; its replacement answers the request (the reaper
    sends the job's message again, which carries no inputs and claims) with an undisturbed
    request's certificates, after one counted attempt."""
    model = _knn_model(deployment)
    # in the job's row (under 64 KiB), and about a second of the worker's time
    inputs = np.random.default_rng(8).uniform(0, 1, size=(250, 57)).round(3)
    body = {"inputs": inputs.tolist()}
    log = deployment.service.logs / "worker.log"

    def post() -> Any:
        with deployment.client() as client:
            return client.post(f"{model}/certify", json=body, timeout=RECOVERY_S + 60)

    reference = post().json()  # the model made hot, by a claimed request
    seen = len(log.read_text())
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post)
        deadline = time.monotonic() + RECOVERY_S
        while f"{CERTIFY_TASK}[" not in log.read_text()[seen:] and time.monotonic() < deadline:
            time.sleep(0.005)
        _replace_worker(deployment)
        got = answer.result(timeout=RECOVERY_S + 60)
    assert got.status_code == 200, got.text
    job_id = got.json()["job_id"]
    assert f"job {job_id}: certified unclaimed" not in log.read_text()  # killed before
    assert got.json()["certificates"] == reference["certificates"]
    with deployment.client() as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["attempts"] == 1


def _replace_worker(deployment: Deployment) -> None:
    deployment.service.kill_worker()
    deployment.service.start_worker()


@pytest.mark.parametrize("repeat", [1, 2])
def test_worker_killed_with_the_default_visibility_timeout(
    deployment: Deployment, repeat: int
) -> None:
    _disturbed(deployment, "ensemble", _running_with(1), lambda: _replace_worker(deployment))


def test_three_worker_losses_in_three_chunks(deployment: Deployment) -> None:
    """The worker is lost three times while one job runs, after its 1st, 3rd and 5th member
    is stored (members are trained one at a time here, two per chunk): the job still
    completes, with the undisturbed run's members and certificates."""
    reference = _reference(deployment, "ensemble")
    job_id = _submit(deployment, "ensemble")
    with deployment.client() as client:
        for chunk in range(3):
            _until(client, job_id, _running_with(2 * chunk + 1), RECOVERY_S)
            _replace_worker(deployment)
    got = _results(deployment, job_id)
    assert got == reference


def test_embedded_local_worker_killed(tmp_path: Path) -> None:
    """``rab serve`` restarts its killed local worker, and the job it held completes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAB_")}
    env.update(LEASES, RAB_DATA_DIR=str(tmp_path / "data"))
    key = create_key(env, "embedded-faults")
    port = free_port()
    log = tmp_path / "serve.log"
    serve = subprocess.Popen(service_cli("serve", "--port", str(port)), env=env, cwd=REPO_ROOT,
                             stdout=log.open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, serve, log)
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as client:
            dataset = client.post("/v1/datasets", json={"builtin": "digits", "classes": [0, 1]})
            body = {"dataset_id": dataset.json()["id"], "method": "ensemble",
                    "params": {**ENSEMBLE, "num_models": 4}}
            job_id = client.post("/v1/jobs", json=body).json()["id"]
            _until(client, job_id, _running_with(1), RECOVERY_S)
            children = subprocess.run(["pgrep", "-P", str(serve.pid)], capture_output=True,
                                      text=True).stdout.split()
            assert children, "serve runs no local worker"
            for pid in children:
                os.killpg(int(pid), signal.SIGKILL)
            job = _until(client, job_id, lambda j: j["state"] == "succeeded", RECOVERY_S)
            members = client.get(job["links"]["model"]).json()["members"]
            assert [m["index"] for m in members] == [0, 1, 2, 3]
    finally:
        stop(serve)
    assert "restarting in" in log.read_text()
