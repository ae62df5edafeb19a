"""One Settings object, read from the environment and `.env`.

The seed's variable names work as they are (``PORT``, ``DATABASE_URL``, ``JWT_SECRET`` …);
Darkroom's own settings carry a ``DARKROOM_`` prefix.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TASK_PRICES: dict[str, int] = {
    "background_removal": 1,
    "style_transfer": 2,
    "color_enhancement": 1,
    "text_to_image": 4,
    "custom": 4,
}

# Replicate models per task type ("owner/name" runs the latest version, "owner/name:version" a fixed one).
DEFAULT_REPLICATE_MODELS: dict[str, str] = {"text_to_image": "black-forest-labs/flux-schnell"}

PROVIDER_NAMES = ("local", "openai", "stability", "replicate", "comfyui")

# Values copied from examples that must never protect a production deployment.
PLACEHOLDER_SECRETS = {
    "",
    "changeme",
    "change-me",
    "secret",
    "your-super-secret-jwt-key",
    "your-jwt-secret",
}

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str | int) -> int:
    """``"7d"`` → 604800; ``"90m"``, ``"3600"`` and plain ints work too."""
    if isinstance(value, int):
        return value
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 3600, 90m, 12h or 7d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,
    )

    # -- application -------------------------------------------------------------------------
    app_env: Literal["development", "test", "production"] = Field(
        "development", validation_alias=_env("APP_ENV", "NODE_ENV")
    )
    host: str = Field("127.0.0.1", validation_alias=_env("DARKROOM_HOST", "HOST"))
    port: int = Field(3000, validation_alias=_env("PORT", "DARKROOM_PORT"))
    app_url: str | None = Field(None, validation_alias=_env("APP_URL"))
    data_dir: Path = Field(Path("./data"), validation_alias=_env("DARKROOM_DATA_DIR"))
    log_level: str = Field("info", validation_alias=_env("DARKROOM_LOG_LEVEL", "LOG_LEVEL"))

    # -- database ----------------------------------------------------------------------------
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    auto_migrate: bool = Field(True, validation_alias=_env("DARKROOM_AUTO_MIGRATE"))

    # -- storage -----------------------------------------------------------------------------
    storage_provider: Literal["local", "s3", "r2"] = Field("local", validation_alias=_env("STORAGE_PROVIDER"))
    cdn_url: str | None = Field(None, validation_alias=_env("CDN_URL"))
    s3_bucket_name: str | None = Field(None, validation_alias=_env("S3_BUCKET_NAME"))
    s3_access_key_id: str | None = Field(None, validation_alias=_env("S3_ACCESS_KEY_ID"))
    s3_secret_access_key: str | None = Field(None, validation_alias=_env("S3_SECRET_ACCESS_KEY"))
    s3_region: str | None = Field(None, validation_alias=_env("S3_REGION"))
    s3_endpoint: str | None = Field(None, validation_alias=_env("S3_ENDPOINT"))
    r2_bucket_name: str | None = Field(None, validation_alias=_env("R2_BUCKET_NAME"))
    r2_access_key_id: str | None = Field(None, validation_alias=_env("R2_ACCESS_KEY_ID"))
    r2_secret_access_key: str | None = Field(None, validation_alias=_env("R2_SECRET_ACCESS_KEY"))
    r2_endpoint: str | None = Field(None, validation_alias=_env("R2_ENDPOINT"))
    file_url_ttl: int = Field(3600, validation_alias=_env("DARKROOM_FILE_URL_TTL"))

    # -- AI providers ------------------------------------------------------------------------
    default_ai_provider: str = Field("local", validation_alias=_env("DEFAULT_AI_PROVIDER"))
    openai_api_key: str | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str = Field("https://api.openai.com/v1", validation_alias=_env("OPENAI_BASE_URL"))
    openai_model: str | None = Field(None, validation_alias=_env("OPENAI_MODEL"))
    stability_api_key: str | None = Field(None, validation_alias=_env("STABILITY_API_KEY"))
    stability_base_url: str = Field("https://api.stability.ai", validation_alias=_env("STABILITY_BASE_URL"))
    model_processes: int = Field(1, ge=1, le=32, validation_alias=_env("DARKROOM_MODEL_PROCESSES"))
    onnx_threads: int | None = Field(None, ge=1, validation_alias=_env("DARKROOM_ONNX_THREADS"))

    # -- external providers: routing, retries, downloads ----------------------------------------
    routes: dict[str, list[str]] = Field(default_factory=dict, validation_alias=_env("DARKROOM_ROUTES"))
    provider_fallback: bool = Field(True, validation_alias=_env("DARKROOM_PROVIDER_FALLBACK"))
    provider_timeout_seconds: float = Field(
        120, gt=0, validation_alias=_env("DARKROOM_PROVIDER_TIMEOUT_SECONDS")
    )
    provider_deadline_seconds: float = Field(
        900, gt=0, validation_alias=_env("DARKROOM_PROVIDER_DEADLINE_SECONDS")
    )
    provider_retries: int = Field(2, ge=0, le=10, validation_alias=_env("DARKROOM_PROVIDER_RETRIES"))
    provider_backoff_seconds: float = Field(
        1.0, ge=0, validation_alias=_env("DARKROOM_PROVIDER_BACKOFF_SECONDS")
    )
    provider_max_retry_after_seconds: float = Field(
        60, ge=0, validation_alias=_env("DARKROOM_PROVIDER_MAX_RETRY_AFTER_SECONDS")
    )
    provider_poll_seconds: float = Field(1.0, gt=0, validation_alias=_env("DARKROOM_PROVIDER_POLL_SECONDS"))
    download_max_mb: float = Field(50, gt=0, validation_alias=_env("DARKROOM_DOWNLOAD_MAX_MB"))
    download_timeout_seconds: float = Field(
        60, gt=0, validation_alias=_env("DARKROOM_DOWNLOAD_TIMEOUT_SECONDS")
    )
    download_max_redirects: int = Field(
        3, ge=0, le=10, validation_alias=_env("DARKROOM_DOWNLOAD_MAX_REDIRECTS")
    )
    trusted_download_hosts: str = Field("", validation_alias=_env("DARKROOM_TRUSTED_DOWNLOAD_HOSTS"))
    openai_concurrency: int = Field(4, ge=1, le=64, validation_alias=_env("OPENAI_CONCURRENCY"))
    openai_quality: Literal["auto", "low", "medium", "high"] = Field(
        "auto", validation_alias=_env("OPENAI_QUALITY")
    )
    stability_engine: Literal["core", "ultra", "sd3", "sdxl-v1"] = Field(
        "core", validation_alias=_env("STABILITY_ENGINE")
    )
    stability_concurrency: int = Field(4, ge=1, le=64, validation_alias=_env("STABILITY_CONCURRENCY"))
    replicate_api_token: str | None = Field(None, validation_alias=_env("REPLICATE_API_TOKEN"))
    replicate_base_url: str = Field("https://api.replicate.com", validation_alias=_env("REPLICATE_BASE_URL"))
    replicate_models: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_REPLICATE_MODELS), validation_alias=_env("REPLICATE_MODELS")
    )
    replicate_webhook_url: str | None = Field(None, validation_alias=_env("REPLICATE_WEBHOOK_URL"))
    replicate_webhook_secret: str | None = Field(None, validation_alias=_env("REPLICATE_WEBHOOK_SECRET"))
    replicate_download_hosts: str = Field(
        "replicate.delivery,*.replicate.delivery", validation_alias=_env("REPLICATE_DOWNLOAD_HOSTS")
    )
    replicate_concurrency: int = Field(4, ge=1, le=64, validation_alias=_env("REPLICATE_CONCURRENCY"))
    comfyui_url: str | None = Field(None, validation_alias=_env("COMFYUI_URL"))
    comfyui_workflows_dir: Path | None = Field(None, validation_alias=_env("COMFYUI_WORKFLOWS_DIR"))
    comfyui_checkpoint: str = Field("sd_xl_base_1.0.safetensors", validation_alias=_env("COMFYUI_CHECKPOINT"))
    comfyui_concurrency: int = Field(1, ge=1, le=64, validation_alias=_env("COMFYUI_CONCURRENCY"))

    # -- auth --------------------------------------------------------------------------------
    jwt_secret: str | None = Field(None, validation_alias=_env("JWT_SECRET"))
    jwt_expires_in: int = Field(7 * 86400, validation_alias=_env("JWT_EXPIRES_IN"))
    signup_credits: int = Field(20, ge=0, validation_alias=_env("DARKROOM_SIGNUP_CREDITS"))
    allow_signup: bool = Field(True, validation_alias=_env("DARKROOM_ALLOW_SIGNUP"))

    # -- tasks -------------------------------------------------------------------------------
    task_prices: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_TASK_PRICES), validation_alias=_env("DARKROOM_TASK_PRICES")
    )
    max_files: int = Field(5, ge=1, le=20, validation_alias=_env("DARKROOM_MAX_FILES"))
    max_file_mb: float = Field(10, gt=0, validation_alias=_env("DARKROOM_MAX_FILE_MB"))
    max_pixels: int = Field(40_000_000, ge=1, validation_alias=_env("DARKROOM_MAX_PIXELS"))
    max_retries: int = Field(3, ge=0, validation_alias=_env("DARKROOM_MAX_RETRIES"))

    # -- execution ---------------------------------------------------------------------------
    run_workers: bool = Field(True, validation_alias=_env("DARKROOM_RUN_WORKERS"))
    worker_concurrency: int = Field(2, ge=1, le=64, validation_alias=_env("DARKROOM_WORKERS"))
    task_lease_seconds: float = Field(30, gt=0, validation_alias=_env("DARKROOM_TASK_LEASE_SECONDS"))
    reaper_interval_seconds: float = Field(
        10, gt=0, validation_alias=_env("DARKROOM_REAPER_INTERVAL_SECONDS")
    )
    max_claims: int = Field(5, ge=1, validation_alias=_env("DARKROOM_MAX_CLAIMS"))
    orphan_sweep_after_seconds: float = Field(
        3600, ge=0, validation_alias=_env("DARKROOM_ORPHAN_SWEEP_AFTER_SECONDS")
    )

    # -- live events and web pages -------------------------------------------------------------
    sse_keepalive_seconds: float = Field(15, gt=0, validation_alias=_env("DARKROOM_SSE_KEEPALIVE_SECONDS"))
    events_poll_seconds: float = Field(1.0, ge=0, validation_alias=_env("DARKROOM_EVENTS_POLL_SECONDS"))
    default_locale: Literal["en", "zh-CN"] = Field("en", validation_alias=_env("DARKROOM_DEFAULT_LOCALE"))
    secure_cookies: bool | None = Field(None, validation_alias=_env("DARKROOM_SECURE_COOKIES"))
    # -- scale out (broker, metrics) ---------------------------------------------------------
    broker_url: str | None = Field(None, validation_alias=_env("DARKROOM_BROKER_URL"))
    broker_queue: str = Field("darkroom", min_length=1, validation_alias=_env("DARKROOM_BROKER_QUEUE"))
    redispatch_after_seconds: float = Field(
        60, gt=0, validation_alias=_env("DARKROOM_REDISPATCH_AFTER_SECONDS")
    )
    task_time_limit_seconds: int = Field(
        1200, ge=10, validation_alias=_env("DARKROOM_TASK_TIME_LIMIT_SECONDS")
    )
    upload_url_ttl: int = Field(900, ge=10, le=86400, validation_alias=_env("DARKROOM_UPLOAD_URL_TTL"))
    metrics_enabled: bool = Field(True, validation_alias=_env("DARKROOM_METRICS"))
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias=_env("DARKROOM_METRICS_PORT"))

    @field_validator("jwt_expires_in", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://", "amqp://", "amqps://")):
            raise ValueError("DARKROOM_BROKER_URL must start with redis:// or amqp://")
        return value

    @field_validator("task_prices", mode="before")
    @classmethod
    def _prices(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, dict):
            merged = dict(DEFAULT_TASK_PRICES)
            merged.update({str(k): int(v) for k, v in value.items()})
            if any(v < 0 for v in merged.values()):
                raise ValueError("task prices cannot be negative")
            return merged
        return value

    @field_validator("routes", "replicate_models", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("routes", mode="after")
    @classmethod
    def _known_providers(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for task_type, names in value.items():
            unknown = [n for n in names if n not in PROVIDER_NAMES]
            if unknown:
                raise ValueError(
                    f"DARKROOM_ROUTES[{task_type!r}] names unknown providers {unknown}; "
                    f"known: {', '.join(PROVIDER_NAMES)}"
                )
        return value

    @field_validator("openai_model", mode="after")
    @classmethod
    def _no_dall_e(cls, value: str | None) -> str | None:
        if value and value.strip().lower().startswith("dall-e"):
            raise ValueError(
                f"OPENAI_MODEL={value} is not supported: DALL·E 2 and 3 were removed from the OpenAI "
                "Images API. Use a GPT image model such as gpt-image-1 (or leave OPENAI_MODEL empty)."
            )
        return value

    @model_validator(mode="after")
    def _production_secrets(self) -> Settings:
        if self.app_env == "production":
            if self.jwt_secret is None or self.jwt_secret.strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError("JWT_SECRET must be set to a real secret when APP_ENV=production")
            if len(self.jwt_secret) < 32:
                raise ValueError("JWT_SECRET must be at least 32 characters when APP_ENV=production")
        return self

    # -- derived -----------------------------------------------------------------------------
    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def resolved_database_url(self) -> str:
        url = self.database_url
        if not url:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'darkroom.db').resolve()}"
        if url.startswith(("postgres://", "postgresql://")):
            return "postgresql+asyncpg://" + url.split("://", 1)[1]
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
        if "://" not in url:  # the seed's DATABASE_URL=./database.sqlite
            return f"sqlite+aiosqlite:///{Path(url).resolve()}"
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @cached_property
    def secret_key(self) -> str:
        """JWT_SECRET, or (outside production) a random secret kept in the data dir."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / "jwt_secret"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: when two processes start at once, exactly one writes the secret
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            for _ in range(50):  # the winner may still be writing it
                value = path.read_text().strip()
                if value:
                    return value
                time.sleep(0.01)
            raise RuntimeError(f"{path} is empty; delete it or set JWT_SECRET") from None
        value = secrets.token_urlsafe(48)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        return value

    @staticmethod
    def host_list(value: str) -> list[str]:
        """``"a.com, *.b.com"`` → ``["a.com", "*.b.com"]`` (lower case)."""
        return [h.strip().lower() for h in value.split(",") if h.strip()]

    def price_of(self, task_type: str) -> int | None:
        return self.task_prices.get(task_type)
