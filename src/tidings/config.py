"""Settings from ``TIDINGS_*`` environment variables, then an optional TOML file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tidings.domain.addresses import AddressPolicy
from tidings.domain.retry import RetryPolicy


class Settings(BaseSettings):
    """Every knob has the default DESIGN.md names; environment variables win over the file.

    The config file is ``$TIDINGS_CONFIG`` if set, else ``tidings.toml`` in the working
    directory when it exists.
    """

    model_config = SettingsConfigDict(
        env_prefix="TIDINGS_",
        extra="ignore",
        hide_input_in_errors=True,  # a bad database or proxy URL may carry a password
    )

    database_url: str | None = None
    data_dir: Path = Path(".tidings")
    env: Literal["production", "development"] = "production"
    delivery_timeout: float = Field(10.0, gt=0)
    retry_base_delay: float = Field(10.0, ge=0)
    retry_max_attempts: int = Field(11, ge=1)
    retry_max_window: float = Field(86_400.0, gt=0)
    retry_max_delay: float = Field(21_600.0, gt=0)
    breaker_threshold: int = Field(20, ge=0)
    encryption_key: str | None = None
    verify_endpoints: bool = False
    """New or moved subscriptions stay disabled until they answer ``endpoint.verify``."""
    secret_rotation_grace: float = Field(86_400.0, ge=0)
    rsa_key_bits: Literal[2048, 3072, 4096] = 2048
    """Size of the RSA keys made for ``rsa-sha256`` subscriptions (see docs: 4096 costs
    about 7 times as much CPU per signature)."""
    """Seconds the secret replaced by a rotation keeps signing beside the new one."""
    allow_cidrs: str = ""
    """Comma-separated ranges deliveries may reach although private (e.g. a VPC peer)."""
    deny_cidrs: str = ""
    """Comma-separated ranges deliveries may never reach, public or not."""
    api_rate_limit: float = Field(200.0, ge=0)
    """Requests per second per API key (bursts of twice that); 0 turns the limit off."""
    max_request_bytes: int = Field(1_048_576, gt=0)
    log_format: Literal["json", "console"] | None = None
    """None means readable lines in development, JSON lines in production."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """``debug`` logs every attempt; ``info`` the failed ones and what operators must know."""
    access_log: bool | None = None
    """uvicorn's per-request log line; None means on in development, off in production."""
    apps: str | None = None
    """Which installed apps (entry points ``tidings.apps``) to load, comma-separated; unset
    loads every installed one, empty loads none. See ``tidings.apps``."""
    crm_enabled: bool | None = None
    """Before apps: ``false`` served no CRM. Still honoured (as ``apps`` without ``crm``)
    so an upgrade does not expose the CRM where it was turned off."""
    sender: Literal["curl", "aiohttp"] = "curl"
    """The HTTP client deliveries go out with: libcurl on its own thread (pycurl), or
    aiohttp on the event loop. Both keep the same rules; see the README's benchmarks."""
    egress_proxy: str | None = None
    """``http://[user:pass@]host:port``: every delivery, test send and verification goes out
    through this HTTP CONNECT proxy, tunnelled to the address the SSRF guard checked (the
    curl sender only)."""
    ca_bundle: Path | None = None
    """A PEM file of CAs trusted for receivers' TLS, beside the system's."""
    dispatcher_enabled: bool = True
    """``serve`` runs a dispatcher too; turn off for API-only processes beside workers."""
    dispatcher_concurrency: int = Field(1000, ge=1)
    """Attempts in flight at once per worker: cheap (asyncio), so sized for slow receivers."""
    subscription_concurrency: int = Field(50, ge=1)
    """The most slots one subscription's adaptive limit may reach in a worker; twice that
    while its receiver usually answers within 100 ms (``domain/scheduling.py``,
    ``QUICK_REACH``)."""
    dispatcher_batch_size: int = Field(200, ge=1)
    dispatcher_poll_interval: float = Field(1.0, gt=0)
    claim_lease: float | None = None
    retention_days: float = Field(30.0, gt=0)
    response_body_retention_days: float = Field(7.0, gt=0)
    prune_interval: float = Field(300.0, gt=0)
    prune_batch_size: int = Field(1000, ge=1)
    partition_rows: int = Field(10_000_000, ge=1)
    """PostgreSQL: keys per partition of events, deliveries and attempts (retention drops
    whole partitions). About deliveries per day x retention days / 15: claims look at
    every partition of deliveries (keep them to 10-20), and a partition goes only when
    its newest row is past the retention period (see docs/scaling.md)."""
    transform_workers: int = Field(2, ge=1, le=64)
    """Processes that run subscriptions' JavaScript transformations (QuickJS, the
    ``transform`` extra), started when the first script runs: a script that loops stalls
    one of them, for at most the time limit, never the server."""
    transform_time_limit: float = Field(0.05, gt=0, le=10)
    """Seconds of CPU one transformation may take (compiling its script, or one run)."""
    transform_memory_limit_mb: int = Field(32, ge=1, le=1024)
    """MiB of memory each transformation script may hold (its own JavaScript heap)."""

    @field_validator("egress_proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = None
        usable = parts.scheme in ("http", "https") and parts.hostname and port
        if not usable or parts.path not in ("", "/"):
            raise ValueError("must look like http://[user:pass@]host:port")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @model_validator(mode="after")
    def _proxy_needs_curl(self) -> Settings:
        if self.egress_proxy and self.sender != "curl":
            raise ValueError(
                "TIDINGS_EGRESS_PROXY needs TIDINGS_SENDER=curl: only that sender tunnels "
                "to the address the SSRF guard checked"
            )
        return self

    @model_validator(mode="after")
    def _honour_crm_enabled(self) -> Settings:
        if self.crm_enabled is False:
            from tidings.apps import chosen_names

            self.apps = ",".join(name for name in chosen_names(self.apps) if name != "crm")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        import os

        path = Path(os.environ.get("TIDINGS_CONFIG", "tidings.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.resolve() / 'tidings.db'}"

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def json_logs(self) -> bool:
        return self.log_format == "json" or (self.log_format is None and not self.development)

    @property
    def lease_seconds(self) -> float:
        """How long a claim lasts: past it, another worker may retry the delivery."""
        return self.claim_lease if self.claim_lease is not None else self.delivery_timeout + 20

    @property
    def address_policy(self) -> AddressPolicy:
        return AddressPolicy.from_cidrs(
            development=self.development,
            allow=self.allow_cidrs.split(","),
            deny=self.deny_cidrs.split(","),
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            base_delay=self.retry_base_delay,
            max_attempts=self.retry_max_attempts,
            max_window=self.retry_max_window,
            max_delay=self.retry_max_delay,
        )
