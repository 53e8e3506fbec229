"""Every setting creditq reads, from ``CREDITQ_*`` environment variables: the one home of defaults.

Keys are ``SecretStr`` so that printing the settings never shows them. A missing
key is not an error at import: only when that provider is actually called
(``Settings.inveterate_key()``), so a Chargebee-only shop needs no Inveterate key.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import MissingCredentials

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREDITQ_", extra="ignore", frozen=True)

    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str | None = Field(
        default=None, description="Celery broker; defaults to the Redis URL."
    )

    inveterate_api_key: SecretStr | None = None
    inveterate_base_url: str = "https://public.inveterateapi.com"
    chargebee_site: str | None = None
    chargebee_api_key: SecretStr | None = None
    chargebee_base_url: str | None = Field(
        default=None, description="Site root; defaults to https://{site}.chargebee.com."
    )
    chargebee_business_entity_id: str | None = None
    chargebee_amount_in_decimal: bool = Field(
        default=False,
        description="Send amount_in_decimal instead of minor units (multi-decimal sites).",
    )

    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_base_seconds: float = Field(default=2.0, gt=0)
    # Countdowns must stay below the broker's visibility timeout (see worker.app), or
    # Redis would redeliver a message that is merely waiting for its ETA.
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    confirm_deadline_seconds: float = Field(default=3600.0, gt=0)
    confirm_first_poll_seconds: float = Field(
        default=2.0, ge=0, description="First listing read after a 2xx (the provider's lag)."
    )
    confirm_batch_seconds: float = Field(
        default=1.0,
        ge=0,
        description=(
            "A scheduled listing read waits this much longer so that grants submitted just "
            "after the first ride along: one read, several confirmations."
        ),
    )
    confirm_poll_max_seconds: float = Field(
        default=60.0, gt=0, description="Cap of the growing interval between listing reads."
    )
    settle_seconds: float = Field(
        default=30.0,
        ge=0,
        description=(
            "After an ambiguous POST (500, timeout), how long the listing must have had to show "
            "the credit before its absence counts as 'not applied'. Must exceed the provider's "
            "listing lag, or a retry could pay twice."
        ),
    )
    reconcile_interval_seconds: float = Field(default=15.0, gt=0)
    reconcile_grace_seconds: float = Field(
        default=60.0, gt=0, description="How overdue a job must be before the sweep re-drives it."
    )
    http_timeout_seconds: float = Field(default=10.0, gt=0)
    inveterate_rate_limit_per_minute: int = Field(default=100, ge=1)
    chargebee_rate_limit_per_minute: int = Field(default=150, ge=1)

    max_amount: Decimal = Field(
        default=Decimal("10000"),
        gt=0,
        description="Largest absolute amount one grant may carry; a guard against typos.",
    )
    default_currency: str = Field(
        default="USD", pattern=r"^[A-Z]{3}$", description="Currency of grants that name none."
    )
    job_ttl_seconds: int = Field(
        default=30 * 24 * 3600, ge=60, description="How long terminal jobs are kept."
    )
    visibility_timeout_seconds: int = Field(default=3600, ge=60)
    redis_min_replicas: int = Field(
        default=0,
        ge=0,
        description=("Replicas that must hold the move before a POST (Redis WAIT); 0: none asked."),
    )
    allow_volatile_redis: bool = Field(
        default=False,
        description=(
            "Let workers use a job store that keeps nothing on disk or evicts keys: for a "
            "demo or a test only (worker.durability)."
        ),
    )

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def effective_chargebee_base_url(self) -> str:
        if self.chargebee_base_url:
            return self.chargebee_base_url.rstrip("/")
        if not self.chargebee_site:
            raise MissingCredentials("CREDITQ_CHARGEBEE_SITE", "chargebee")
        return f"https://{self.chargebee_site}.chargebee.com"

    def inveterate_key(self) -> SecretStr:
        if self.inveterate_api_key is None or not self.inveterate_api_key.get_secret_value():
            raise MissingCredentials("CREDITQ_INVETERATE_API_KEY", "inveterate")
        return self.inveterate_api_key

    def chargebee_key(self) -> SecretStr:
        if self.chargebee_api_key is None or not self.chargebee_api_key.get_secret_value():
            raise MissingCredentials("CREDITQ_CHARGEBEE_API_KEY", "chargebee")
        return self.chargebee_api_key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()``."""
    return Settings()
