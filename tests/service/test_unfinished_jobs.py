"""The job quota's count and a certify batch's search for queued jobs read only the jobs still
to finish, however many finished ones the key and the model have had (the partial indexes of
revision 0009), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, text

from app.db import Database
from app.orm import ApiKey, Job, WorkUnit, utcnow
from app.quotas import unfinished_jobs_of
from app.settings import Settings
from workers.claims import waiting_certify_jobs

FINISHED = 3000  # enough that a full read of the key's or the model's jobs is the costlier plan


def _jobs(db: Database) -> tuple[str, list[str]]:
    """A key with FINISHED succeeded certify jobs of model "m" and three queued ones."""
    with db.session() as session:
        key = ApiKey(name="history", key_hash="h" * 64)
        session.add(key)
        session.flush()
        owner = key.id
    base: dict[str, Any] = {
        "owner_id": owner, "kind": "certify", "model_id": "m", "method": "knn", "params": {},
        "max_attempts": 3, "request_sha256": "0" * 64, "progress_total": 1,
        "created_at": utcnow(),
    }
    queued = [f"{i:032x}" for i in range(FINISHED, FINISHED + 3)]
    with db.session() as session:
        session.execute(insert(Job), [{**base, "id": f"{i:032x}", "state": "succeeded"}
                                      for i in range(FINISHED)])
        session.execute(insert(Job), [{**base, "id": job_id, "state": "queued"}
                                      for job_id in queued])
        unit = {"name": "certify", "task": "t", "queue": "cpu", "args": {}, "max_attempts": 3}
        session.execute(insert(WorkUnit), [
            {**unit, "job_id": f"{i:032x}", "state": "done"} for i in range(FINISHED)
        ] + [{**unit, "job_id": job_id, "state": "pending"} for job_id in queued])
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return owner, queued


def _plan(db: Database, statement: Any) -> str:
    """The database's plan of ``statement`` (its parameters inlined), as one string."""
    with db.engine.connect() as conn:
        sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))
        explain = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
        return "\n".join(str(row) for row in conn.exec_driver_sql(explain + sql))


def test_the_quota_and_the_batch_read_only_unfinished_jobs(
    migrated_db: tuple[Settings, Database],
) -> None:
    _, db = migrated_db
    owner, queued = _jobs(db)
    with db.session() as session:
        assert session.scalar(unfinished_jobs_of(owner)) == 3
        batch = waiting_certify_jobs("m", queued[0], "certify", 10)
        found = session.scalars(batch).all()
    assert found == queued[1:]
    for statement in (unfinished_jobs_of(owner), batch):
        plan = _plan(db, statement)
        assert "ix_jobs_unfinished_" in plan, plan  # one of the partial indexes
        for full_read in ("ix_jobs_owner_id", "Seq Scan on jobs", "SCAN jobs"):
            assert full_read not in plan, plan
