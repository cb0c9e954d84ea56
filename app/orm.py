"""SQLAlchemy 2 models: API keys, stored objects, datasets, jobs, models and certificates.

The schema changes only through Alembic revisions in ``migrations/``; the first revision
creates exactly these tables on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    literal_column,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from contract.api import ID_PATTERN, NAME_LENGTH, TERMINAL_STATES


def new_id() -> str:
    """A random 32-hex-digit identifier."""
    return uuid.uuid4().hex


def is_id(text: str) -> bool:
    """Whether ``text`` has the form of a :func:`new_id` (so it can be looked up at all)."""
    return re.fullmatch(ID_PATTERN, text) is not None


def utcnow() -> datetime:
    """Timezone-aware current time."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that reads back aware UTC values on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Unsigned64(TypeDecorator[int]):
    """An integer in [0, 2**64) (e.g. a noise seed from 8 hash bytes), stored as decimal text:
    BIGINT is signed on PostgreSQL and SQLite would round larger values to REAL."""

    impl = String(20)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: object) -> str | None:
        if value is None:
            return None
        if not 0 <= int(value) < 2**64:
            raise ValueError(f"{value} is outside [0, 2**64)")
        return str(int(value))

    def process_result_value(self, value: str | None, dialect: object) -> int | None:
        return None if value is None else int(value)


class Base(DeclarativeBase):
    """Declarative base; JSON columns map plain dicts and lists."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class ApiKey(Base):
    """An API key, stored as the SHA-256 of the secret (the secret is shown once); an
    ``operator`` key may also read the service's metrics and detailed readiness; a revoked key
    (``revoked_at`` set) authenticates nothing."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    operator: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class StoredObject(Base):
    """Metadata of one artefact in ``models_store`` (content addressed by SHA-256);
    ``created_at`` is refreshed whenever the object is written again (garbage collection's
    grace period counts from it)."""

    __tablename__ = "stored_objects"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Dataset(Base):
    """A validated dataset owned by one key; ``content_sha256`` identifies its arrays."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("owner_id", "content_sha256"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    source: Mapped[str] = mapped_column(String(32))
    content_sha256: Mapped[str] = mapped_column(String(64))
    object_sha256: Mapped[str] = mapped_column(ForeignKey("stored_objects.sha256"))
    input_shape: Mapped[list[Any]]
    class_names: Mapped[list[Any]]
    train_counts: Mapped[list[Any]]
    test_counts: Mapped[list[Any]]
    feature_range: Mapped[list[Any] | None]
    provenance: Mapped[dict[str, Any]]  # source, preprocessing, class mapping, split
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


#: A certify job's inputs up to this size (npz bytes) are kept in its row, committed with it:
#: no object row, staged file or sync per online request, and no stored object another key's
#: timing could probe; larger ones (uploads) go to the artefact store.
INLINE_INPUTS_BYTES = 1 << 16


class Job(Base):
    """A certification job; this row is the source of truth for state and progress."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("owner_id", "idempotency_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "evaluate" | "certify"
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    model_id: Mapped[str | None] = mapped_column(String(32))  # certify jobs
    method: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]]
    attack: Mapped[dict[str, Any] | None]
    inputs_sha256: Mapped[str | None] = mapped_column(String(64))
    # a certify job's inputs (npz) when at most INLINE_INPUTS_BYTES, else in the store
    # (revision 0008); not loaded with the row unless asked for
    inputs_inline: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    phase: Mapped[str] = mapped_column(String(200), default="queued")
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    request_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


#: The condition "the job is still to finish", the one every query of unfinished jobs writes:
#: a partial index serves only a query that repeats its condition (SQLite matches it term by
#: term), and with the states as literals, not parameters, a prepared statement's generic plan
#: can use it too.
UNFINISHED = Job.state.not_in([literal_column(f"'{state}'") for state in sorted(TERMINAL_STATES)])
# The unfinished jobs of a key (its job quota, counted at every submission) and of a model (the
# queued certify jobs a worker batches): without these, both read every job the key or the model
# ever had, a cost growing with each request served (revision 0009).
Index("ix_jobs_unfinished_owner", Job.owner_id, postgresql_where=UNFINISHED,
      sqlite_where=UNFINISHED)
Index("ix_jobs_unfinished_model", Job.model_id, Job.created_at, postgresql_where=UNFINISHED,
      sqlite_where=UNFINISHED)


class WorkUnit(Base):
    """One unit of a job's work (the K-NN evaluation, one chunk of ensemble members, the
    vote, a certification), owned by a lease while a worker runs it.

    ``state``: ``blocked`` (waits for other units: the vote), ``pending`` (a message was sent
    at ``enqueued_at``), ``running`` (``lease_owner`` renews ``lease_expires_at``), ``done``,
    ``failed``. Messages are hints: the reaper re-sends a pending unit whose message may be
    lost and re-queues a running one whose lease expired. ``attempts`` counts its claims,
    capped at ``max_attempts``."""

    __tablename__ = "work_units"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(32))
    args: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)


Index("ix_work_units_state", WorkUnit.state)


class WorkerPresence(Base):
    """A live worker process: the queues it consumes, renewed every few seconds
    (``workers.presence``); a row not renewed for a while is a worker that is gone."""

    __tablename__ = "worker_presence"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    queues: Mapped[list[Any]]
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Model(Base):
    """A certified model: an ensemble of members, partition base models (``ModelMember`` rows
    too) or a K-NN configuration, with its training set."""

    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    method: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]]
    attack: Mapped[dict[str, Any] | None]
    dataset_sha256: Mapped[str] = mapped_column(String(64))
    train_sha256: Mapped[str] = mapped_column(String(64))  # content of the (poisoned) train set
    train_object_sha256: Mapped[str] = mapped_column(ForeignKey("stored_objects.sha256"))
    code_version: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelMember(Base):
    """One trained ensemble member or partition base model (``member_index`` = partition; an
    empty partition's model is the empty object): its state_dict object, its noise seed and
    how it was trained (``training``: the sidecar record, with a partition's subset size and
    SHA-256; None before revision 0002)."""

    __tablename__ = "model_members"
    __table_args__ = (UniqueConstraint("job_id", "member_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    member_index: Mapped[int] = mapped_column(Integer)
    state_sha256: Mapped[str] = mapped_column(ForeignKey("stored_objects.sha256"))
    noise_seed: Mapped[int] = mapped_column(Unsigned64)
    training: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Certificate(Base):
    """One certified prediction (eq. 14) of a job, on the clean or the backdoored test set;
    with a poison-count certificate (partition and K-NN jobs, revision 0007) its count, the
    changed points it tolerates and the prediction it is proved for (NULL otherwise)."""

    __tablename__ = "certificates"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    subset: Mapped[str] = mapped_column(String(16), primary_key=True)  # clean|backdoor|inputs
    sample_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[int | None] = mapped_column(Integer)
    prediction: Mapped[int] = mapped_column(Integer)
    top_class: Mapped[int] = mapped_column(Integer)
    p_a: Mapped[float] = mapped_column(Float)
    p_b: Mapped[float] = mapped_column(Float)
    radius: Mapped[float] = mapped_column(Float)
    abstain: Mapped[bool] = mapped_column(Boolean)
    correct: Mapped[bool | None] = mapped_column(Boolean)
    poison_count: Mapped[int | None] = mapped_column(Integer)
    poison_modifications: Mapped[int | None] = mapped_column(Integer)
    count_prediction: Mapped[int | None] = mapped_column(Integer)


Index("ix_certificates_radius", Certificate.job_id, Certificate.subset, Certificate.radius)
