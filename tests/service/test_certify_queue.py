"""One message per burst of certify requests (``app.certify_queue``), on a real PostgreSQL: a
submission is covered, and sends no message, exactly when another certify job of its model
waits for a worker; submissions racing workers and cancellations leave no job waiting without
one, and the reaper never has to step in."""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import numpy as np
import pytest
from celery.utils.collections import LimitedSet
from sqlalchemy import func, select, text, update

from app import submissions
from app.ahead import AheadSending
from app.artefacts import npz_bytes
from app.db import Database
from app.orm import UNFINISHED, ApiKey, Job, WorkUnit, new_id
from app.problems import ProblemError
from app.settings import Settings
from app.units import Message, certify_message, first_message_id, message, plan
from workers import lifecycle, tasks

pytestmark = [pytest.mark.services,
              pytest.mark.parametrize("migrated_db", ["postgresql"], indirect=True)]


def _owner(db: Database) -> str:
    with db.session() as session:
        key = ApiKey(name="certify-queue", key_hash=new_id().ljust(64, "0"))
        session.add(key)
        session.flush()
        return key.id


#: The inputs of every certify job here (one input; what a message carries).
_INPUTS = npz_bytes({"X": np.zeros((1, 3), np.float32)})


def _submit(db: Database, owner: str, model_id: str, limit: int = 10**6,
            ahead: Callable[[Message], None] | None = None) -> tuple[str, Message | None]:
    """Submit a certify job of one input as the certify route does: its id and the message
    it sends after its commit (None when covered). ``ahead``: the route's lone request
    (``app.ahead``), its message (one that carries the inputs) given to ``ahead`` before the
    submission, and returned only when sent again (a statement slower than the wait's half)."""
    job = Job(id=new_id(), owner_id=owner, kind="certify", dataset_id=None, model_id=model_id,
              method="knn", params={}, attack=None,
              inputs_sha256=hashlib.sha256(_INPUTS).hexdigest(), inputs_inline=_INPUTS,
              progress_total=1, max_attempts=3, request_sha256="b" * 64)
    units = plan(job)
    first = message(units[0]) if ahead is None else certify_message(units[0], model_id, _INPUTS)
    sent_at = time.monotonic()
    if ahead is not None:
        ahead(first)
    with db.session() as session:
        covered = submissions.submit_within_quota(session, job, units, limit=limit)
    late = AheadSending(tasks._settings().certify_ahead_wait_s).late(time.monotonic() - sent_at)
    return job.id, None if covered or (ahead is not None and not late) else first


def _cancel(db: Database, job_id: str) -> None:
    """The certify route's cancellation: one conditional update of the job row."""
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id, Job.state.in_(("queued", "running")))
                        .values(state="cancelled", phase="cancelled"))


def _waiting(db: Database, model_id: str) -> list[str]:
    """The model's certify jobs still waiting for a worker."""
    with db.session() as session:
        return list(session.scalars(
            select(Job.id).join(WorkUnit, WorkUnit.job_id == Job.id)
            .where(Job.model_id == model_id, UNFINISHED, WorkUnit.state == "pending")))


def test_a_submission_is_covered_only_by_a_job_of_its_model_waiting_or_being_certified(
    migrated_db: tuple[Settings, Database],
) -> None:
    _, db = migrated_db
    owner = _owner(db)
    first, sent = _submit(db, owner, "model-1")
    assert sent is not None and sent[1] == [first, "certify"]
    assert _submit(db, owner, "model-1")[1] is None  # first waits: it covers this one
    assert _submit(db, owner, "model-2")[1] is not None  # another model's queue
    claim = lifecycle.claim(db, first, "certify", 30.0, batch_inputs=10)
    assert claim is not None and len(claim.batch) == 1  # both taken: none waits ...
    third, sent = _submit(db, owner, "model-1")  # ... but their worker reads again after them
    assert sent is None
    lifecycle.succeed_all(db, [(c, [], {}) for c in (claim, *claim.batch)], durable=False)
    fourth, sent = _submit(db, owner, "model-1")
    assert sent is None  # third waits
    _cancel(db, third)
    _cancel(db, fourth)  # a cancelled job covers nothing
    assert _submit(db, owner, "model-1")[1] is not None
    with db.session() as session:  # nor does one whose unit has no attempt left
        session.execute(update(WorkUnit).values(attempts=WorkUnit.max_attempts))
    assert _submit(db, owner, "model-1")[1] is not None


@pytest.fixture
def fake_worker(migrated_db: tuple[Settings, Database], monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[tuple[Database, queue.Queue[tuple[Message, str]], list[int]]]:
    """The worker's serving loop (``tasks._serve``) as it runs, on this database, with a
    computation that only finishes its batch (as ``tasks._certify_inputs`` does) and a broker
    that is a queue of (message, task id); yields the database, the queue and the sizes of
    the batches certified."""
    settings, db = migrated_db
    settings = settings.model_copy(update={"certify_serve_s": 0.05,
                                           "certify_batch_wait_s": 0.002})
    for name, value in {"settings": settings, "db": db}.items():
        monkeypatch.setitem(tasks._resources, name, value)
    monkeypatch.setattr(tasks.worker_state, "revoked", LimitedSet(maxlen=10_000))
    broker: queue.Queue[tuple[Message, str]] = queue.Queue()
    batches: list[int] = []

    def certify(claim: lifecycle.Claim) -> None:
        jobs = [claim, *claim.batch]
        tasks._resources["batching"] = bool(claim.batch)
        time.sleep(random.choice((0.0, random.uniform(0, 0.004))))  # the computation
        skipped = lifecycle.succeed_all(db, [(job, [], {"batch": len(jobs)}) for job in jobs],
                                        durable=False)
        tasks._finished_here([job.job_id for job in jobs if job not in skipped])
        batches.append(len(jobs))

    monkeypatch.setattr(tasks, "_certify_inputs", certify)
    monkeypatch.setattr(tasks, "send", lambda _, messages: [
        broker.put((m, new_id())) for m in messages])  # the reaper's kind: a fresh task id
    # every model hot, its computation one that gives no certificate rows, so that a message
    # that carries inputs is certified unclaimed by an idle worker (tasks._certify_unclaimed)
    hot = SimpleNamespace(model=SimpleNamespace(method="knn", params={}))
    monkeypatch.setitem(tasks._resources, "models", SimpleNamespace(hot=lambda _: hot))
    monkeypatch.setattr(tasks, "evaluation_request", lambda *_: SimpleNamespace(method=None))
    monkeypatch.setattr(tasks, "_certify_hot", lambda _, __, tests: {tests[0].subset: None})
    monkeypatch.setattr(tasks, "_input_rows", lambda _: [])
    yield db, broker, batches


def _worker_settings(monkeypatch: pytest.MonkeyPatch, **update: float) -> None:
    """The fake worker's settings, with ``update``."""
    monkeypatch.setitem(tasks._resources, "settings",
                        tasks._resources["settings"].model_copy(update=update))


def _serve(message: Message, task_id: str) -> None:
    """The worker's task for a certify message, as Celery calls it."""
    (_, args, _) = message
    tasks._serve(args[0], args[1], task_id, (args[2], args[3]) if len(args) > 2 else None)


def _slow_submissions(db: Database) -> None:
    """Every submission's statement lasts 0 - 10 ms more between its read of the waiting jobs
    and its commit (a trigger sleeping on the unit's insert), as one waiting on a slow disk
    does: the race between a submission and a worker's claim becomes likely."""
    with db.session() as session:
        session.execute(text(
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(random() * 0.01); RETURN NEW; END $$"))
        session.execute(text(
            "CREATE TRIGGER slow_insert AFTER INSERT ON work_units FOR EACH ROW "
            "EXECUTE FUNCTION slow_insert()"))


@pytest.mark.parametrize("ahead", [False, True], ids=["after-commit", "ahead"])
def test_submissions_racing_workers_and_cancellations_leave_no_job_waiting(
    fake_worker: tuple[Database, queue.Queue[tuple[Message, str]], list[int]],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, ahead: bool,
) -> None:
    """Four clients submit 600 certify jobs of one model while two workers serve it and a
    fifth client cancels jobs at random; when the broker has nothing left, no job waits (no
    reaper runs here: a job left uncovered would wait for ever), and far fewer messages were
    sent than jobs submitted.

    ``ahead``: every request sends its message before its submission (as a lone one does,
    ``app.ahead``), with a worker's wait for a job not yet committed of 8 ms against
    submissions lasting up to 10 ms more: messages come before their job, and are served
    once it is committed, or dropped at the wait's end (those of the 40 submissions the
    quota refuses), and late submissions send theirs again; every path is taken, and still
    no job is left waiting."""
    db, broker, batches = fake_worker
    _worker_settings(monkeypatch, certify_ahead_wait_s=0.008)
    caplog.set_level(logging.INFO, logger=tasks.log.name)
    _slow_submissions(db)
    owner, model = _owner(db), "model-race"
    submitted: list[str] = []
    sent, sent_again = [0], [0]
    done = threading.Event()

    def send_first(job_message: Message) -> None:
        sent[0] += 1
        broker.put((job_message, first_message_id(job_message[1][0], "certify")))

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(150):
            if ahead and i % 15 == 0:  # refused by the quota: a message for no job
                with pytest.raises(ProblemError):
                    _submit(db, owner, model, limit=0, ahead=send_first)
                continue
            job_id, sent_message = _submit(db, owner, model,
                                           ahead=send_first if ahead else None)
            submitted.append(job_id)
            if sent_message is not None:
                sent_again[0] += ahead
                send_first(sent_message)
            time.sleep(rng.choice((0.0, 0.0, rng.uniform(0, 0.02))))  # in bursts

    def canceller() -> None:
        rng = random.Random(99)
        while not done.is_set():
            if submitted:
                _cancel(db, rng.choice(submitted[-20:]))
            time.sleep(rng.uniform(0, 0.01))

    def worker() -> None:
        while not done.is_set() or not broker.empty():
            try:
                job_message, task_id = broker.get(timeout=0.05)
            except queue.Empty:
                continue
            _serve(job_message, task_id)

    clients = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    others = [threading.Thread(target=canceller),
              *(threading.Thread(target=worker) for _ in range(2))]
    for thread in [*clients, *others]:
        thread.start()
    for thread in clients:
        thread.join()
    done.set()
    for thread in others:
        thread.join()
    assert len(submitted) == (560 if ahead else 600)
    assert _waiting(db, model) == []
    with db.session() as session:
        states = dict(session.execute(
            select(Job.state, func.count()).where(Job.model_id == model).group_by(Job.state)
        ).all())
    assert set(states) <= {"succeeded", "cancelled"} and states.get("succeeded", 0) > 300
    if not ahead:
        assert sent[0] < len(submitted) / 3, (sent[0], batches)
        assert max(batches) > 1
        return
    events = [r.getMessage() for r in caplog.records]
    paths = {name: sum(text in e for e in events) for name, text in {
        "unclaimed": "certified unclaimed", "seen later": "after a first look found it not yet",
        "dropped": "not committed by the end of its message's wait"}.items()}
    assert all(paths.values()) and batches and sent_again[0] > 0, (paths, batches, sent_again)


def test_a_message_whose_job_was_cancelled_still_serves_the_jobs_it_covered(
    fake_worker: tuple[Database, queue.Queue[tuple[Message, str]], list[int]],
) -> None:
    """The only message of a burst is for a job cancelled before any worker took it: the
    worker that finds nothing to run for it certifies the jobs submitted behind it."""
    db, broker, batches = fake_worker
    owner, model = _owner(db), "model-cancelled"
    first, sent = _submit(db, owner, model)
    behind = [_submit(db, owner, model) for _ in range(3)]
    assert sent is not None and all(m is None for _, m in behind)
    _cancel(db, first)
    (_, (job_id, unit), _) = sent
    tasks._serve(job_id, unit, first_message_id(job_id, unit))
    assert _waiting(db, model) == [] and batches == [3]
    assert broker.empty()


def test_a_worker_serves_one_model_for_a_while_then_queues_it_behind_the_others(
    fake_worker: tuple[Database, queue.Queue[tuple[Message, str]], list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past ``RAB_CERTIFY_SERVE_S`` on one model, the worker leaves its serving loop with one
    message for the model's oldest waiting job (a fresh task id: it claims), so that other
    messages queued before it are taken first."""
    db, broker, batches = fake_worker
    # past the serving time only after the second batch, whatever the machine's pauses
    # (the first ends 0.4 s before it: a margin, not a bound; the second past it, surely)
    _worker_settings(monkeypatch, certify_serve_s=1.0)
    owner, model = _owner(db), "model-busy"
    first, sent = _submit(db, owner, model)
    assert sent is not None
    certify = tasks._certify_inputs
    more: list[str] = []

    def certify_while_more_arrive(claim: lifecycle.Claim) -> None:
        certify(claim)
        time.sleep(0.6)  # the second batch ends past the 1 s on one model
        more.append(_submit(db, owner, model)[0])

    monkeypatch.setattr(tasks, "_certify_inputs", certify_while_more_arrive)
    tasks._serve(first, "certify", first_message_id(first, "certify"))
    assert batches == [1, 1] and len(more) == 2
    (_, args, _), task_id = broker.get_nowait()
    assert args == [more[-1], "certify"] and task_id != first_message_id(more[-1], "certify")
    assert _waiting(db, model) == [more[-1]]


@pytest.mark.parametrize("batching", [False, True], ids=["unclaimed", "claimed"])
def test_a_message_that_comes_before_its_job_serves_it_once_committed(
    fake_worker: tuple[Database, queue.Queue[tuple[Message, str]], list[int]],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, batching: bool,
) -> None:
    """A lone request's message goes before its submission (``app.ahead``); here the worker
    serves it 50 ms before the job is committed, well within its 0.5 s wait. An idle worker
    certifies the job unclaimed once it sees it, a busy one claims it: either way it is
    certified by that message, and nothing else is sent."""
    db, broker, batches = fake_worker
    _worker_settings(monkeypatch, certify_ahead_wait_s=0.5)
    monkeypatch.setitem(tasks._resources, "batching", batching)
    caplog.set_level(logging.INFO, logger=tasks.log.name)
    owner, model = _owner(db), "model-ahead"
    served: list[threading.Thread] = []

    def serve_first(job_message: Message) -> None:
        served.append(threading.Thread(target=_serve, args=(
            job_message, first_message_id(job_message[1][0], "certify"))))
        served[0].start()
        time.sleep(0.05)  # the submission's statement, slow

    job_id, sent_again = _submit(db, owner, model, ahead=serve_first)
    served[0].join(timeout=10)
    assert sent_again is None and broker.empty()
    with db.session() as session:
        assert session.get_one(Job, job_id).state == "succeeded"
    assert batches == ([1] if batching else [])
    assert any("after a first look found it not yet" in r.getMessage() for r in caplog.records)


def test_a_message_for_a_job_the_quota_refused_is_dropped_after_the_wait(
    fake_worker: tuple[Database, queue.Queue[tuple[Message, str]], list[int]],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A lone request sent its message ahead, then the quota refused it: the job never exists,
    and the worker drops the message once its wait (0.2 s) is over, having written nothing."""
    db, broker, batches = fake_worker
    _worker_settings(monkeypatch, certify_ahead_wait_s=0.2)
    caplog.set_level(logging.INFO, logger=tasks.log.name)
    owner, model = _owner(db), "model-refused"
    sent: list[Message] = []
    with pytest.raises(ProblemError):
        _submit(db, owner, model, limit=0, ahead=sent.append)
    started = time.monotonic()
    _serve(sent[0], first_message_id(sent[0][1][0], "certify"))
    assert 0.2 <= time.monotonic() - started < 5
    assert batches == [] and broker.empty()
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    assert any("not committed by the end of its message's wait" in r.getMessage()
               for r in caplog.records)
