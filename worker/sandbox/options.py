"""The sandbox's knobs, one frozen value read once per request.

Changing an option (``Sandbox.configure`` or ``POST /_sandbox/config``) swaps the
whole value, so a request never sees half of an update.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from worker.settings import Settings

DEFAULT_INVETERATE_KEY = "sandbox-inveterate-key"
DEFAULT_CHARGEBEE_KEY = "test_sandbox_chargebee_key"

# The providers' real request budgets, as creditq runs without a setting: a run that sets
# these (and a sandbox enforcing DEFAULT_BUDGETS_RATE_LIMIT) paces as production does.
DEFAULT_BUDGETS: dict[str, str] = {
    f"CREDITQ_{provider.upper()}_RATE_LIMIT_PER_MINUTE": str(
        Settings.model_fields[f"{provider}_rate_limit_per_minute"].default
    )
    for provider in ("inveterate", "chargebee")
}
# What a sandbox enforces beside them, per 60 s: its limit is one number for both
# providers, so the larger budget (Chargebee's 150; Inveterate's 100 cannot be set apart).
DEFAULT_BUDGETS_RATE_LIMIT = max(int(v) for v in DEFAULT_BUDGETS.values())


def creditq_env(redis_url: str, sandbox_url: str, **settings: str) -> dict[str, str]:
    """The environment of a creditq process (a worker, beat) that talks to a sandbox.

    Starts from this process's environment without any ``CREDITQ_`` variable (a user's
    real keys never reach a sandbox run), points both providers at the sandbox with its
    default keys, and adds ``settings`` (``CREDITQ_...`` names) on top.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITQ_")}
    env.update(
        {
            "CREDITQ_REDIS_URL": redis_url,
            "CREDITQ_INVETERATE_BASE_URL": sandbox_url,
            "CREDITQ_INVETERATE_API_KEY": DEFAULT_INVETERATE_KEY,
            "CREDITQ_CHARGEBEE_BASE_URL": sandbox_url,
            "CREDITQ_CHARGEBEE_API_KEY": DEFAULT_CHARGEBEE_KEY,
            # A sandbox run is a demo or a test: its Redis may keep nothing on disk.
            "CREDITQ_ALLOW_VOLATILE_REDIS": "true",
        }
    )
    env.update(settings)
    return env


@dataclass(frozen=True)
class SandboxOptions:
    """Behaviour of the fake providers.

    lag:             seconds before an applied credit shows in the listings (0: at once);
                     both providers document that a write "may take a while" to show.
    latency:         fixed delay added to every provider call, in seconds.
    page_size:       server-side cap on a listing page whatever ``limit`` asks (None: no cap),
                     to force many small pages.
    rate_limit:      calls allowed per ``rate_window`` seconds and provider (None: unlimited);
                     GETs and POSTs count alike, as Chargebee counts them.
    rate_window:     length of the sliding window, seconds (default 60: both providers
                     state their budgets per minute).
    inveterate_key:  the only value of ``X-Inveterate-Api-Key`` accepted.
    chargebee_key:   the only Basic-auth user name accepted by the Chargebee API.
    echo_notes:      Inveterate listings carry the note (True) or omit it and say
                     "Admin credit" (False), which forces clients to match by amount and time.
    hold:            seconds a ``timeout_after`` fault holds the reply (default 2 s, longer than
                     a test client's read timeout).
    idempotency_ttl: seconds Chargebee remembers an idempotency key (30 minutes, as documented;
                     0 turns the record off to exercise a client's own reconciliation).
    oldest_first:    Inveterate listings run oldest first (in the order credits became
                     visible) instead of newest first: its docs never say which end a listing
                     starts from, so a client must cope with both. Chargebee keeps newest first.
    """

    lag: float = 0.0
    latency: float = 0.0
    page_size: int | None = None
    rate_limit: int | None = None
    rate_window: float = 60.0
    inveterate_key: str = DEFAULT_INVETERATE_KEY
    chargebee_key: str = DEFAULT_CHARGEBEE_KEY
    echo_notes: bool = True
    hold: float = 2.0
    idempotency_ttl: float = 1800.0
    oldest_first: bool = False

    def __post_init__(self) -> None:
        for name in ("lag", "latency", "hold", "idempotency_ttl"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.rate_window <= 0:
            raise ValueError("rate_window must be positive")
        if self.page_size is not None and self.page_size < 1:
            raise ValueError("page_size must be at least 1 (or None for no cap)")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1 (or None for no limit)")
        if not self.inveterate_key or not self.chargebee_key:
            raise ValueError("the sandbox's API keys must not be empty")
