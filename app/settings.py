"""One settings object for the API, the workers and the CLI (environment variables ``RAB_*``).

Defaults give the embedded mode: a SQLite file, a local store directory and a Celery filesystem
transport, all under ``RAB_DATA_DIR`` (``./rab-data``). Production sets ``RAB_DATABASE_URL``
(PostgreSQL), ``RAB_BROKER_URL`` (Redis) and ``RAB_STORE_URL`` (an S3-compatible bucket).
"""

from __future__ import annotations

import importlib.util
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from models_store import ObjectStore, open_store


class Settings(BaseSettings):
    """Service configuration; every field can be set as ``RAB_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RAB_", extra="ignore")

    data_dir: Path = Field(
        default=Path("rab-data"), description="Base directory of the embedded mode."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; SQLite file if unset."
    )
    broker_url: str | None = Field(default=None, description="Celery broker; local files if unset.")
    broker_key_prefix: str = Field(
        default="", description="Redis key prefix isolating one deployment."
    )
    broker_transport_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra kombu transport options (JSON), e.g. unacked_restore_interval.",
    )
    store_dir: Path | None = Field(default=None, description="Store root; data_dir/store if unset.")
    store_url: str | None = Field(
        default=None,
        description="Artefact store: s3://bucket/prefix (endpoint and credentials from the "
        "standard AWS_* variables) or a directory; the local store_dir if unset.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Local read-through cache of an S3 store; data_dir/cache if unset.",
    )
    cache_max_bytes: int = Field(
        default=10 * 1024**3, gt=0, description="Size bound of the read-through cache."
    )
    migrations_dir: Path | None = Field(
        default=None,
        description="Alembic script location (default: the installed migrations package).",
    )
    shared_data: Path | None = Field(
        default=None,
        description="Directory of the named built-in datasets (spambase.data, mnist_01.npz, "
        "cifar10_airplane_bird.npz, torchvision's MNIST/ and cifar-10-batches-py/); default: "
        "the library's (rab.evaluation.shared_data_dir).",
    )
    allow_downloads: bool = Field(
        default=False,
        description="Let built-in requests with download: true fetch MNIST / CIFAR-10 from the "
        "internet into the shared data directory.",
    )
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, gt=0, description="Upload size limit.")
    max_decompressed_bytes: int = Field(
        default=256 * 1024 * 1024, gt=0,
        description="Largest decompressed size of the arrays of an uploaded npz (declared shape "
        "x itemsize, checked before decompressing).",
    )
    max_json_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0,
        description="Largest JSON request body (send many certify inputs as an npz upload).",
    )
    max_job_attempts: int = Field(
        default=3, ge=1,
        description="Claims of one unit of a job's work (a chunk, the vote) before the job fails.",
    )
    quota_jobs: int = Field(
        default=32, ge=1, description="Unfinished jobs (queued or running) per API key."
    )
    quota_models: int = Field(
        default=20_000, ge=1,
        description="Models in training (ensemble members, partition base models) per API key.",
    )
    quota_bytes: int = Field(
        default=20 * 1024**3, ge=1, description="Bytes of stored datasets per API key."
    )
    model_cache_bytes: int = Field(
        default=2 * 1024**3, ge=0,
        description="Bytes of models a worker keeps loaded (hot) for certify requests.",
    )
    certify_batch_wait_s: float = Field(
        default=0.005, ge=0,
        description="A worker claiming a certify job under concurrent load (its last batch "
        "had other jobs) waits this long, then certifies with it the other waiting certify jobs "
        "of the same model in one pass; a lone request does not wait.",
    )
    certify_serve_s: float = Field(
        default=1.0, gt=0,
        description="A worker certifies the waiting requests of one model, batch after batch, "
        "for at most this long before it takes the other messages queued (it sends one for the "
        "model's requests still waiting).",
    )
    certify_ahead_wait_s: float = Field(
        default=0.1, ge=0,
        description="PostgreSQL: a lone certify request sends its message before its job is "
        "committed, and a worker given a message whose job it cannot see yet looks for it "
        "until this long after it began serving the message (the API sends it again when "
        "its submission took more than half of this; app.ahead); 0: every message after its "
        "commit.",
    )
    certify_batch_inputs: int = Field(
        default=256, ge=1,
        description="Most inputs a worker certifies in one batch of certify jobs.",
    )
    lease_s: float = Field(
        default=30.0, gt=0,
        description="A unit of work's lease: its worker renews it every third of this; once it "
        "expires (the worker, its broker message or its database was lost) the reaper "
        "re-queues the unit.",
    )
    reap_interval_s: float = Field(
        default=10.0, gt=0, description="How often the API's reaper looks for lost work."
    )
    upkeep_interval_s: float = Field(
        default=2.0, gt=0,
        description="How often each API process checks whether jobs or work_units needs a "
        "VACUUM or an ANALYZE (app.upkeep; one statistics query when neither does).",
    )
    upkeep_rows: int = Field(
        default=1000, ge=0,
        description="PostgreSQL: the API vacuums jobs or work_units once this many of its row "
        "versions (plus 5 % of its live rows) are dead, and analyzes it once that many rows "
        "changed since its last analysis (app.upkeep); 0: leave both to autovacuum.",
    )
    resend_after_s: float = Field(
        default=60.0, gt=0,
        description="A unit still pending this long after its message was sent is sent again "
        "(a broker restarted without persistence loses its messages).",
    )
    visibility_timeout_s: int = Field(
        default=6 * 3600, gt=0, description="Redis redelivery timeout."
    )
    certify_wait_s: float = Field(default=10.0, ge=0, description="POST /certify waits this long.")
    redis_url: str | None = Field(
        default=None,
        description="Redis for the API's signals (a finished job wakes its waiting request, a "
        "revoked key leaves every API process's cache); default: broker_url when it is Redis. "
        "Without one (the embedded mode, RabbitMQ) a waiting request polls the job row.",
    )
    key_cache_ttl_s: float = Field(
        default=5.0, ge=0,
        description="How long an API process trusts a looked-up key without reading it again "
        "(only while it hears revocations on Redis; 0: every request reads it).",
    )
    read_pool_size: int = Field(
        default=10, ge=1,
        description="Connections of each API process's pool for hot reads on PostgreSQL (the key "
        "lookup and GET of one certificate, from the event loop: app.fastreads).",
    )
    api_workers: int = Field(
        default=1, ge=1, description="uvicorn worker processes of `rab serve` (production: ~ CPUs)."
    )
    train_batch: int | None = Field(
        default=None, ge=1,
        description="Ensemble members a worker trains at once (stacked, vmap); unset: 1 on a "
        "CPU, as many as fit on a GPU.",
    )
    code_version: str | None = Field(default=None, description="Recorded in model provenance.")

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'rab.db').resolve()}"

    @property
    def resolved_redis_url(self) -> str | None:
        """The Redis of the API's signals: ``redis_url``, else a Redis broker, else none."""
        if self.redis_url:
            return self.redis_url
        broker = self.broker_url or ""
        return broker if broker.startswith(("redis://", "rediss://")) else None

    @cached_property
    def resolved_shared_data(self) -> Path:
        """The built-in data directory (this setting, else the library's default)."""
        from rab.evaluation.datasets import shared_data_dir

        return shared_data_dir(self.shared_data)

    @cached_property
    def resolved_migrations_dir(self) -> Path:
        """The Alembic script directory (located without importing its ``env.py``)."""
        if self.migrations_dir is not None:
            return self.migrations_dir
        spec = importlib.util.find_spec("migrations")
        if spec is None or spec.origin is None:
            raise RuntimeError("the migrations package is not installed")
        return Path(spec.origin).parent

    def celery_broker(self) -> tuple[str, dict[str, Any]]:
        """Broker URL and kombu transport options: Redis or RabbitMQ (``broker_url``), or the
        embedded filesystem transport under the data directory."""
        if self.embedded_broker:
            queue_dir, control_dir = self.broker_folders
            return "filesystem://", {
                "data_folder_in": str(queue_dir),
                "data_folder_out": str(queue_dir),
                "control_folder": str(control_dir),
                "store_processed": False,
                # kombu polls the folder once a second by default, which caps the embedded
                # mode at about one task a second; a listing every 0.1 s costs next to nothing.
                "polling_interval": 0.1,
            }
        options: dict[str, Any] = {"visibility_timeout": self.visibility_timeout_s}
        if self.broker_key_prefix:
            options["global_keyprefix"] = self.broker_key_prefix
        return str(self.broker_url), {**options, **self.broker_transport_options}

    @property
    def broker_folders(self) -> tuple[Path, Path]:
        """Queue and control folders of the embedded transport."""
        return self.broker_folder / "queue", self.broker_folder / "control"

    def ensure_broker_folders(self) -> None:
        """Create the embedded transport's folders (done at start-up, not at import)."""
        if self.embedded_broker:
            for folder in self.broker_folders:
                folder.mkdir(parents=True, exist_ok=True)

    @cached_property
    def resolved_store_dir(self) -> Path:
        """The artefact store root."""
        return (self.store_dir or self.data_dir / "store").resolve()

    def open_store(self) -> ObjectStore:
        """The artefact store of ``store_url`` (or of the local ``resolved_store_dir``)."""
        return open_store(
            self.store_url or self.resolved_store_dir,
            cache_dir=(self.cache_dir or self.data_dir / "cache").resolve(),
            cache_bytes=self.cache_max_bytes,
        )

    @cached_property
    def broker_folder(self) -> Path:
        """Message folder of the embedded (filesystem) Celery transport."""
        return (self.data_dir / "broker").resolve()

    @property
    def embedded_broker(self) -> bool:
        """True when Celery runs over the local filesystem transport."""
        return self.broker_url is None

    @property
    def resolved_code_version(self) -> str:
        """Code version recorded with every model (``RAB_CODE_VERSION`` or the package version)."""
        if self.code_version:
            return self.code_version
        import rab

        return f"rab-certify {rab.__version__}"


def get_settings() -> Settings:
    """Settings read from the current environment."""
    return Settings()
