"""Settings: the only reader of the environment (``TALLY_*``). CLI flags override them."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tally.domain.keys import secret_kind

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$")


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
    schema_check_ms: int = Field(
        default=1000,
        ge=50,
        le=2000,  # the contract step waits 5 s for every process to have looked (ADR 0034)
        description="How often a process looks at which schema phase a change in flight is in.",
    )
    breaker_cooldown_ms: int = Field(
        default=1000, ge=10, description="After the primary fails, writes fail fast for this long (doubling)."
    )
    migration_lock_timeout_ms: int = Field(
        default=2000, ge=1, description="Longest wait of a migration for each lock; then it retries later."
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
    # Slow and oversized clients (docs/limits.md, "Connections"): enforced by `tally serve`'s
    # connection protocol (api/connections.py) and the request middleware.
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line plus header block; larger → 431 and the connection closed.",
    )
    header_read_timeout_ms: int = Field(
        default=10_000,
        ge=1,
        description="A connection must send a whole header block within this, from connect or its first "
        "byte; else 408 (or, before any byte, the connection is closed).",
    )
    body_read_timeout_ms: int = Field(
        default=10_000, ge=1, description="A request must send its whole body within this; else 408."
    )
    keep_alive_seconds: int = Field(
        default=5, ge=1, le=3600, description="An idle kept-alive connection is closed after this."
    )
    request_timeout_ms: int = Field(
        default=10_000, ge=1, description="Maximum time budget of a request (Tally-Timeout-Ms is capped)."
    )
    long_request_timeout_ms: int = Field(
        default=30_000, ge=1, description="Maximum time budget of a long route (POST /v1/transfers/batch)."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="FULL survives power loss; NORMAL only process crashes."
    )
    sqlite_checkpoint_ms: int = Field(
        default=20,
        ge=0,
        description="How often a thread of its own checkpoints the SQLite write-ahead log (ADR 0046); "
        "0: SQLite's own checkpoint, inside the COMMIT that takes the log past 1,000 pages.",
    )
    read_pool_size: int = Field(default=4, ge=1, le=64)
    sqlite_group_commit: int = Field(
        default=64,
        ge=1,
        le=1000,
        description="Most write transactions one SQLite COMMIT may carry (group commit); 1 turns it off.",
    )
    transfer_group_limit: int = Field(
        default=32,
        ge=1,
        le=32,
        description=(
            "Most concurrent POST /v1/transfers written in one transaction (coalesced, ADR 0042); "
            "1 writes each alone."
        ),
    )
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
    # Batch jobs (ADR 0032): `tally jobs run NAME`, and the scheduler where the workers run.
    job_schedule: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["statements", "reconcile", "expire-holds", "purge-idempotency-keys"],
        description="Comma-separated batch jobs the workers run when due ('off': none).",
    )
    job_schedule_seconds: float = Field(
        default=30.0, gt=0, description="How often the scheduler looks for due batch-job periods."
    )
    job_run_lease_ms: int = Field(
        default=30_000,
        ge=100,
        description="How long a batch-job run stays claimed without a step; then a runner may take it over.",
    )
    job_batch_size: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Units per step (one transaction) of a batch job: a step of a job that writes holds "
        "the write lock (on SQLite, the event loop too), so requests wait behind it; reconcile and "
        "statements read first, off both, and write only their result (ADR 0044).",
    )
    ops_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics and /dashboard need it as a Bearer token (at least 16 chars).",
    )
    gc_thresholds: Annotated[tuple[int, int, int] | None, NoDecode] = Field(
        default=(5_000, 20, 50),
        description="gc.set_threshold for each tally serve process, as 'young,middle,old' "
        "(ADR 0030, addenda); 'python' keeps Python's own 700,10,10.",
    )
    route_shortcuts: bool = Field(
        default=True,
        description="POST /v1/transfers served past FastAPI's routing and dependency solving (ADR 0043); "
        "false serves it through FastAPI like every other route.",
    )
    metrics_enabled: bool = Field(
        default=True,
        description="Prometheus metrics and statement timing; off, /metrics and /dashboard answer 404.",
    )
    slow_query_ms: float = Field(
        default=100.0, ge=0, description="A statement at least this slow writes a 'slow query' line."
    )
    # Webhooks (ADR 0025).
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts or CIDRs webhooks may target though private or loopback.",
    )
    webhook_timeout_ms: int = Field(
        default=5000, ge=100, le=60_000, description="Time limit of one delivery attempt, DNS to response."
    )
    webhook_max_attempts: int = Field(
        default=12, ge=1, le=100, description="Attempts of a delivery before it goes dead."
    )
    webhook_first_backoff_ms: int = Field(
        default=2000, ge=1, description="Retry n waits up to first × 2^(n-1) (full jitter)."
    )
    webhook_longest_backoff_ms: int = Field(
        default=3_600_000, ge=1, description="The longest wait between two attempts of a delivery."
    )
    webhook_concurrency: int = Field(
        default=4, ge=0, le=64, description="Deliveries in flight per process (0: this process sends none)."
    )
    cache_url: str = Field(
        default="memory://",
        description="The cache: memory:// (in-process), redis://host:port[/db] or memcached://host:port.",
    )
    cache_invalidation: str | None = Field(
        default=None,
        description="How in-process caches of several processes hear of changes: redis://host:port "
        "(pub/sub), outbox (poll the event feed) or off; default outbox for memory://, off otherwise.",
    )
    cache_invalidation_poll_ms: int = Field(
        default=200, ge=10, description="How often the outbox invalidation reads the event feed."
    )
    cache_ttl_ms: int = Field(
        default=30_000, ge=0, description="How long a cached account and balance is fresh (0: no cache)."
    )
    key_cache_ttl_ms: int = Field(
        default=10_000, ge=0, description="How long a cached API key lookup is fresh (0: no cache)."
    )
    cache_stale_ms: int = Field(
        default=3_600_000,
        ge=0,
        description="How long past freshness an account stays cached for stale-if-error reads.",
    )
    cache_max_entries: int = Field(
        default=100_000, ge=1, description="Entries the in-process cache holds (least recently used go)."
    )
    cache_timeout_ms: int = Field(
        default=50, ge=1, description="The longest wait for one cache call (also bounded by the budget)."
    )
    key_usage_flush_ms: int = Field(
        default=1_000, ge=10, description="How often buffered key usage (last_used_at, counts) is written."
    )
    key_usage_max_keys: int = Field(
        default=10_000, ge=1, description="Keys the usage buffer holds between flushes (more are dropped)."
    )
    rate_limit: str | None = Field(
        default="1000/second",
        description="Requests per API key, in the limits notation (e.g. 100/second, 6000/minute); "
        "off disables.",
    )
    rate_limit_url: str | None = Field(
        default=None,
        description="Where the rate-limit counters live: memory://, redis://… or memcached://… "
        "(default: the cache's server).",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Base64 of 32 bytes: the key webhook secrets are encrypted with at rest.",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="Where the generated key is kept while TALLY_SECRET_KEY is unset (default ./tally.key).",
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

    @field_validator("job_schedule", mode="before")
    @classmethod
    def _split_job_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            names = [name.strip() for name in value.split(",") if name.strip()]
            return [] if names == ["off"] else names
        return value

    @field_validator("gc_thresholds", mode="before")
    @classmethod
    def _split_gc_thresholds(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip() == "python":
                return None
            parts = [part.strip() for part in value.split(",")]
            if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
                raise ValueError(
                    "TALLY_GC_THRESHOLDS is three positive integers, 'young,middle,old', or 'python'."
                )
            return tuple(int(part) for part in parts)
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

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_allowed_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip().lower() for host in value.split(",") if host.strip()]
        return value

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _hosts_or_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not _HOSTNAME.fullmatch(entry):
                    raise ValueError(
                        f"TALLY_WEBHOOK_ALLOWED_HOSTS: {entry!r} is neither a host name nor an address "
                        "nor a CIDR."
                    ) from None
        return value

    @field_validator("secret_key")
    @classmethod
    def _thirty_two_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip().replace("-", "+").replace("_", "/")
        try:
            key = base64.b64decode(text, validate=True)
        except binascii.Error:
            key = b""
        if len(key) != 32:
            raise ValueError(
                "TALLY_SECRET_KEY must be the base64 of 32 random bytes "
                "(python -c 'import os, base64; print(base64.b64encode(os.urandom(32)).decode())')."
            )
        return value
