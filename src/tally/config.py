"""Settings: the only reader of the environment (``TALLY_*``). CLI flags override them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tally.domain.keys import secret_kind


def _default_log_format() -> Literal["json", "console"]:
    return "console" if sys.stderr.isatty() else "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_", extra="ignore")

    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{Path.cwd() / 'tally.db'}",
        description="Primary database: sqlite:///path.db (PostgreSQL arrives in a later release).",
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
        default=10_000, ge=1, description="Per-route maximum of a request's time budget."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="FULL survives power loss; NORMAL only process crashes."
    )
    read_pool_size: int = Field(default=4, ge=1, le=64)

    @field_validator("root_key")
    @classmethod
    def _well_formed_root_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and secret_kind(value.get_secret_value()) != "root":
            raise ValueError(
                "TALLY_ROOT_KEY must be a Tally root key (tally_root_...); make one with `tally keygen`."
            )
        return value
