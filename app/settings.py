"""One settings object for the API, the workers and the CLI (environment variables ``RAB_*``).

Defaults give the embedded mode: a SQLite file, a local store directory and a Celery filesystem
transport, all under ``RAB_DATA_DIR`` (``./rab-data``). Production sets ``RAB_DATABASE_URL``
(PostgreSQL) and ``RAB_BROKER_URL`` (Redis).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

import migrations

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    migrations_dir: Path = Field(
        default=Path(migrations.__file__).parent,
        description="Alembic script location (default: the installed migrations package).",
    )
    builtin_data_dir: Path = Field(
        default=REPO_ROOT.parent / "shared" / "data",
        description="Directory of the named built-in datasets: spambase.data, mnist_01.npz, "
        "cifar10_airplane_bird.npz, and torchvision's MNIST/ and cifar-10-batches-py/.",
    )
    allow_downloads: bool = Field(
        default=False,
        description="Let built-in requests with download: true fetch MNIST / CIFAR-10 from the "
        "internet into builtin_data_dir.",
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
        default=3, ge=1, description="Deliveries of one job before it fails."
    )
    visibility_timeout_s: int = Field(
        default=6 * 3600, gt=0, description="Redis redelivery timeout."
    )
    certify_wait_s: float = Field(default=10.0, ge=0, description="POST /certify waits this long.")
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

    @cached_property
    def resolved_store_dir(self) -> Path:
        """The artefact store root."""
        return (self.store_dir or self.data_dir / "store").resolve()

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
