"""Every setting creditq reads, from ``CREDITQ_*`` environment variables: the one home of defaults
and of the rules a value must follow.

Keys are ``SecretStr`` so that printing the settings never shows them. A missing
key is not an error at import: only when that provider is actually called
(``Settings.inveterate_key()``), so a Chargebee-only shop needs no Inveterate key.
A key is stripped of surrounding whitespace (``echo key > file`` adds a newline) and
refused if it holds a character no HTTP header can carry: sent, h11 would refuse it on
every call and quote it back in the error.

A bad value is refused when the settings are read, by ``get_settings``, as a
``SettingsError`` of one line per variable (``worker.config_errors``); every entry point
(the CLI, a worker, beat) prints those lines and exits 2. Values are never echoed for
keys, and URLs only without their credentials (``worker.redaction``).
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.config_errors import settings_error_lines
from worker.errors import InvalidGrant, MissingCredentials, SettingsError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# How creditq's queues are declared on RabbitMQ (CREDITQ_BROKER_QUEUE_TYPE; worker.app.queues).
QueueType = Literal["classic", "quorum"]

# What the job store may be: what redis-py's ``Redis.from_url`` reads, and Sentinels in
# Celery's ``sentinel://h1:26379/0;sentinel://h2:26379/0`` form (worker.store.connect).
STORE_SCHEMES = ("redis", "rediss", "unix", "sentinel")
# What the Celery broker may be: Redis (kombu's own names), Sentinel in Celery's
# ``sentinel://h1:26379/0;sentinel://h2:26379/0`` form, RabbitMQ, and kombu's in-memory one.
BROKER_SCHEMES = (
    "redis",
    "rediss",
    "redis+socket",
    "sentinel",
    "amqp",
    "amqps",
    "pyamqp",
    "memory",
)
# The brokers that are RabbitMQ (AMQP 0-9-1): the only ones with queue types.
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
_SOCKET_SCHEMES = frozenset({"unix", "redis+socket"})
_REDIS_SCHEMES = frozenset({"redis", "rediss", "sentinel"})
STORE_URL_FORMS = (
    "redis://[user:password@]host[:port][/db], rediss://..., unix:///path/to.sock or "
    "sentinel://host:26379/0;sentinel://host2:26379/0"
)


def broker_scheme(url: str) -> str:
    """Pure: a broker URL's scheme in lower case (a Sentinel list's first part's)."""
    return url.partition("://")[0].lower()


def url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """Pure: why ``url`` cannot name a Redis (or broker) of one of ``schemes``, or None.

    The reason never quotes a part of the URL: a password with an unencoded ``/`` is parsed
    as the port and the path, and would come back in any message that named them.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in schemes:
        return "its scheme must be one of " + ", ".join(f"{s}://" for s in schemes)
    if "@" in rest:
        credentials, _, rest = rest.rpartition("@")
        if any(c in credentials for c in "/?#"):
            # An "@" is fine (URLs split at the last one); these end the host part early.
            return (
                "its user name or password holds '/', '?' or '#': percent-encode them "
                "(%2F, %3F, %23)"
            )
    if scheme in _SOCKET_SCHEMES:
        return None if urlsplit(f"{scheme}://{rest}").path else "it names no socket path"
    if scheme == "memory":
        return None
    parts = urlsplit(f"{scheme}://{rest}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (parts.netloc.endswith(":") and port is None):
        return "its port is not a number from 1 to 65535"
    if any(c.isspace() for c in parts.netloc):
        return "its host holds a space"
    if scheme in _REDIS_SCHEMES and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        return "its database (the path) is not a number such as /0"
    return None


# A bearer token shorter than this is guessable; 32 hex digits (secrets.token_hex(16)) pass.
MIN_TOKEN_LENGTH = 16


class Settings(BaseSettings):
    # hide_input_in_errors: a ValidationError printed by anyone never shows a key or a URL's
    # password; allow_inf_nan: no timeout or interval is "nan" or "inf".
    model_config = SettingsConfigDict(
        env_prefix="CREDITQ_",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        allow_inf_nan=False,
    )

    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str | None = Field(
        default=None, description="Celery broker; defaults to the Redis URL."
    )

    # After both URLs: its validator reads the broker's scheme from them.
    broker_queue_type: QueueType = Field(
        default="classic",
        description=(
            "How creditq declares its three queues on RabbitMQ: classic, or quorum "
            "(replicated by Raft across the cluster's nodes). Quorum needs an AMQP broker."
        ),
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

    api_tokens: SecretStr | None = Field(
        default=None, description="Bearer tokens of creditq serve's /v1 API, separated by commas."
    )

    console_basic_auth: SecretStr | None = Field(
        default=None,
        description="user:password pairs, separated by commas, for the console and /metrics.",
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
    default_currency: str = Field(default="USD", description="Currency of grants that name none.")
    job_ttl_seconds: int = Field(
        default=30 * 24 * 3600, ge=60, description="How long terminal jobs are kept."
    )
    visibility_timeout_seconds: int = Field(default=3600, ge=60)
    redis_sentinel_master: str = Field(
        default="mymaster",
        min_length=1,
        description="The Sentinels' name of the master, when CREDITQ_REDIS_URL names Sentinels.",
    )
    redis_min_replicas: int = Field(
        default=0,
        ge=0,
        description=("Replicas that must hold the move before a POST (Redis WAIT); 0: none asked."),
    )
    allow_volatile_redis: bool = Field(
        default=False,
        description=(
            "Let workers use a job store that keeps nothing on disk or evicts keys: for a "
            "demo or a test only (worker.store.durability)."
        ),
    )

    @field_validator("redis_url")
    @classmethod
    def _store_url(cls, url: str) -> str:
        sentinels = url.lower().startswith("sentinel://")
        for part in url.split(";") if sentinels else [url]:
            problem = url_problem(part.strip(), STORE_SCHEMES)
            if problem is None and sentinels and not part.strip().lower().startswith("sentinel://"):
                problem = "every part of a Sentinel URL must be sentinel://"
            if problem is None and not sentinels and url.partition("://")[0].lower() != "unix":
                problem = _redis_py_problem(url)
            if problem:
                raise ValueError(f"{problem}; expected {STORE_URL_FORMS}")
        return url

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, url: str | None) -> str | None:
        if not url:
            return None  # set but empty (compose passes `CREDITQ_BROKER_URL:` so): the Redis URL
        for part in url.split(";") if url.lower().startswith("sentinel://") else [url]:
            problem = url_problem(part, BROKER_SCHEMES)
            if problem:
                raise ValueError(f"{problem}; expected a Redis, Sentinel or AMQP URL")
        return url

    @field_validator("broker_queue_type")
    @classmethod
    def _quorum_needs_rabbitmq(cls, queue_type: QueueType, info: ValidationInfo) -> QueueType:
        """Quorum queues are RabbitMQ's: on Redis the setting would do nothing, and an
        operator who set it believes the broker's messages are replicated when they are not.
        A broker URL refused already (absent from ``info.data``) has its own line."""
        if queue_type != "quorum" or not {"redis_url", "broker_url"} <= info.data.keys():
            return queue_type
        scheme = broker_scheme(info.data["broker_url"] or info.data["redis_url"])
        if scheme not in AMQP_SCHEMES:
            raise ValueError(
                f"quorum queues are RabbitMQ's and the broker is {scheme}://; set "
                "CREDITQ_BROKER_URL to an amqp:// URL, or leave this setting classic"
            )
        return queue_type

    @field_validator("inveterate_api_key", "chargebee_api_key")
    @classmethod
    def _api_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is None:
            return None
        value = key.get_secret_value().strip()
        if not header_safe(value):
            raise ValueError(
                "the key holds a control or non-ASCII character, which no HTTP header can "
                "carry; set the key alone, as the provider shows it"
            )
        return SecretStr(value) if value else None

    @field_validator("api_tokens")
    @classmethod
    def _api_tokens(cls, tokens: SecretStr | None) -> SecretStr | None:
        if tokens is None:
            return None
        parts = [part.strip() for part in tokens.get_secret_value().split(",")]
        if any(not header_safe(part) or " " in part for part in parts):
            raise ValueError("a token holds a space, a control or a non-ASCII character")
        if any(len(part) < MIN_TOKEN_LENGTH for part in parts if part):
            raise ValueError(f"every token must be at least {MIN_TOKEN_LENGTH} characters")
        kept = ",".join(part for part in parts if part)
        return SecretStr(kept) if kept else None

    @field_validator("console_basic_auth")
    @classmethod
    def _console_auth(cls, pairs: SecretStr | None) -> SecretStr | None:
        if pairs is None or not pairs.get_secret_value().strip():
            return None
        parse_logins(pairs.get_secret_value())  # refused here, with its reason, if malformed
        return pairs

    @property
    def console_logins(self) -> dict[str, str]:
        """The console's users and their passwords (empty: the console and /metrics are shut)."""
        if self.console_basic_auth is None:
            return {}
        return parse_logins(self.console_basic_auth.get_secret_value())

    @property
    def api_token_list(self) -> list[str]:
        """The /v1 API's bearer tokens (empty: the API is open, which only loopback allows)."""
        return self.api_tokens.get_secret_value().split(",") if self.api_tokens else []

    @field_validator("default_currency")
    @classmethod
    def _currency(cls, code: str) -> str:
        """Written as grants must write it (``usd`` is refused, not read as USD: a setting
        says exactly what it means), and a currency a grant may be in (ISO 4217)."""
        from worker.domain.currencies import check_currency  # the ISO table loads on first use

        expected = "expected an ISO 4217 currency code in capitals, such as USD"
        if not (len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()):
            raise ValueError(expected)
        try:
            check_currency(code)
        except InvalidGrant as exc:
            raise ValueError(f"{exc.reason}; {expected}") from None
        return code

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def broker_is_rabbitmq(self) -> bool:
        return broker_scheme(self.effective_broker_url) in AMQP_SCHEMES

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


def parse_logins(text: str) -> dict[str, str]:
    """Pure: ``user:password[,user:password]`` (Flower's ``FLOWER_BASIC_AUTH`` form) as a
    dict; ``ValueError`` when a pair lacks either part."""
    logins: dict[str, str] = {}
    for pair in text.split(","):
        user, _, password = pair.strip().partition(":")
        if not user or not password:
            raise ValueError("expected user:password pairs, each with both parts")
        logins[user] = password
    return logins


def header_safe(value: str) -> bool:
    """Pure: whether ``value`` can travel in an HTTP header as httpx sends it: printable
    ASCII and spaces (RFC 9110 also allows a tab, which no real key holds)."""
    return all(" " <= c <= "~" for c in value)


def _redis_py_problem(url: str) -> str | None:
    """What redis-py itself cannot read in a URL that passed ``url_problem`` (its query)."""
    from redis.connection import parse_url

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        return "redis cannot read its query string (e.g. ?db=, ?socket_timeout=)"
    return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()``.

    Raises ``SettingsError``, one line per bad variable, instead of pydantic's report.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(settings_error_lines(exc, Settings, os.environ)) from None
