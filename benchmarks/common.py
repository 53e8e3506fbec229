"""What every benchmark needs: a real Redis of its own, and settings pointing at it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from worker.embedded_redis import EmbeddedRedis
from worker.models import CreditGrant
from worker.settings import get_settings


@contextlib.contextmanager
def benchmark_redis(*, appendonly: bool = False) -> Iterator[str]:
    """A private redis-server (never the machine's shared one), exported as CREDITQ_REDIS_URL."""
    with EmbeddedRedis(appendonly=appendonly) as server:
        previous = os.environ.get("CREDITQ_REDIS_URL")
        os.environ["CREDITQ_REDIS_URL"] = server.url
        get_settings.cache_clear()
        try:
            yield server.url
        finally:
            if previous is None:
                os.environ.pop("CREDITQ_REDIS_URL", None)
            else:
                os.environ["CREDITQ_REDIS_URL"] = previous
            get_settings.cache_clear()


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


def grant_batch(n: int, prefix: str, per_customer: int = 5) -> list[CreditGrant]:
    """Grants alternating between the providers, ``per_customer`` per customer and provider."""
    return [
        CreditGrant(
            idempotency_key=f"{prefix}-{i}",
            provider="chargebee" if i % 2 else "inveterate",
            customer_id=f"{prefix}-cust-{i // (2 * per_customer)}",
            amount=f"{1 + i % 40}.{i % 100:02d}",
            note=f"order {i}",
        )
        for i in range(n)
    ]
