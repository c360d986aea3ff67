"""Settings: the only reader of the environment (``TALLY_*``). CLI flags override them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tally.domain.keys import secret_kind


def _default_log_format() -> Literal["json", "console"]:
    return "console" if sys.stderr.isatty() else "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_", extra="ignore")

    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{Path.cwd() / 'tally.db'}",
        description="Primary database: sqlite:///path.db or postgresql+psycopg://user:password@host/db.",
    )
    replica_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated PostgreSQL read replicas (streaming standbys of the primary).",
    )
    pool_size: int = Field(default=10, ge=1, le=500, description="Connections to the PostgreSQL primary.")
    replica_pool_size: int = Field(default=10, ge=1, le=500, description="Connections to each replica.")
    replica_max_lag_ms: int = Field(
        default=1000, ge=0, description="A replica further behind than this serves no fresh read."
    )
    replica_check_ms: int = Field(default=200, ge=10, description="How often replica lag is measured.")
    breaker_cooldown_ms: int = Field(
        default=1000, ge=10, description="After the primary fails, writes fail fast for this long (doubling)."
    )
    root_key: SecretStr | None = Field(
        default=None,
        description="The root key; generated and printed once at first start if unset.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_format: Literal["json", "console"] = Field(default_factory=_default_log_format)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    request_timeout_ms: int = Field(
        default=10_000, ge=1, description="Maximum time budget of a request (Tally-Timeout-Ms is capped)."
    )
    long_request_timeout_ms: int = Field(
        default=30_000, ge=1, description="Maximum time budget of a long route (POST /v1/transfers/batch)."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="FULL survives power loss; NORMAL only process crashes."
    )
    read_pool_size: int = Field(default=4, ge=1, le=64)
    hold_sweep_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often the sweeper writes down expired holds (reads see expiry at once).",
    )
    workers: int = Field(default=1, ge=1, le=64, description="Processes `tally serve` runs.")
    worker_enabled: bool = Field(
        default=True,
        description="Run the job workers inside `tally serve` (off: only `tally worker` runs jobs).",
    )
    worker_poll_ms: int = Field(
        default=1000, ge=10, description="How often an idle worker looks for jobs without a wake-up."
    )
    worker_shutdown_grace_ms: int = Field(
        default=10_000, ge=0, description="On shutdown, how long running jobs may finish before release."
    )
    batch_workers: int = Field(
        default=1, ge=0, le=64, description="Loops per process on the transfer-batches queue (0: none)."
    )
    batch_chunk_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Transfers per transaction of a queued non-atomic batch (atomic ones take one).",
    )
    job_lease_ms: int = Field(
        default=60_000,
        ge=100,
        description="How long a worker's claim on a batch job lasts; after it, another worker may take it.",
    )
    ops_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics and /dashboard need it as a Bearer token (at least 16 chars).",
    )
    metrics_enabled: bool = Field(
        default=True,
        description="Prometheus metrics and statement timing; off, /metrics and /dashboard answer 404.",
    )
    slow_query_ms: float = Field(
        default=100.0, ge=0, description="A statement at least this slow writes a 'slow query' line."
    )
    # Not TALLY_-prefixed: prometheus-client reads the same variable, and it must agree with it.
    # `tally serve --workers N` sets it to a private directory of its own.
    prometheus_multiproc_dir: Path | None = Field(
        default=None, validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
    )

    @field_validator("replica_urls", mode="before")
    @classmethod
    def _split_replica_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @field_validator("root_key")
    @classmethod
    def _well_formed_root_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and secret_kind(value.get_secret_value()) != "root":
            raise ValueError(
                "TALLY_ROOT_KEY must be a Tally root key (tally_root_...); make one with `tally keygen`."
            )
        return value

    @field_validator("ops_token")
    @classmethod
    def _long_enough_ops_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("TALLY_OPS_TOKEN must be at least 16 characters long.")
        return value
