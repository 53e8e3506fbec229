"""What the demo runs: its grants and the end each must reach, the faults the sandbox
serves them, and the fast timings its worker runs with."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.domain.job import Job

DEADLINE_SECONDS = 60.0  # every accepted grant reaches its end state in ~10 s here
POLL_SECONDS = 0.1
WORKER_STOP_SECONDS = 10.0
DEMO_JOB_TTL_SECONDS = 3600  # demo jobs left on a user's Redis expire within the hour
WORKER_CONCURRENCY = 8
SANDBOX_LAG_SECONDS = 0.5  # credits show in the listings half a second after they apply
SANDBOX_HOLD_SECONDS = 1.5  # a timeout fault holds the reply past the worker's 1 s timeout

# Fast timings, each consistent with the rules in worker.settings: settle above the
# sandbox's lag (an absent credit then surely did not apply), countdowns far below the
# visibility timeout, a budget the demo never reaches.
DEMO_TIMINGS: dict[str, str] = {
    "CREDITQ_HTTP_TIMEOUT_SECONDS": "1",
    "CREDITQ_SETTLE_SECONDS": "2",
    "CREDITQ_BACKOFF_BASE_SECONDS": "0.2",
    "CREDITQ_BACKOFF_MAX_SECONDS": "2",
    "CREDITQ_CONFIRM_FIRST_POLL_SECONDS": "0.5",
    "CREDITQ_CONFIRM_POLL_MAX_SECONDS": "1",
    "CREDITQ_MAX_ATTEMPTS": "10",
    "CREDITQ_INVETERATE_RATE_LIMIT_PER_MINUTE": "60000",
    "CREDITQ_CHARGEBEE_RATE_LIMIT_PER_MINUTE": "60000",
    "CREDITQ_JOB_TTL_SECONDS": str(DEMO_JOB_TTL_SECONDS),
}

# The faults the sandbox serves, each to the first POST for one customer, so every run tells
# the same story: (provider, customer, fault). A fault that strikes by arrival order could
# fall on the 404 customer, or on a POST no later credit follows, whose failure creditq then
# rightly leaves unknown (worker/pipeline/outcome.py) instead of showing a retry.
FAULTS: list[tuple[str, str, str]] = [
    ("inveterate", "cust-di", "error_after"),  # applied, then 500: found, not paid twice
    ("inveterate", "cust-bo", "timeout_after"),  # applied, no answer in time: the same
    ("chargebee", "cust-ed", "error_before"),  # 500, nothing applied: Chargebee's replay
    ("chargebee", "cust-gus", "rate_limited"),  # 429 with Retry-After: retried later
]
GONE_CUSTOMER = "cust-gone"  # the sandbox answers 404 for this customer


class Expect(StrEnum):
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    REFUSED = "refused at enqueue"
    DUPLICATE = "duplicate detected"


@dataclass(frozen=True)
class Sample:
    """One grant of the demo and the end it must reach."""

    key: str
    provider: str
    customer: str
    amount: str
    currency: str
    expect: Expect
    credit_type: str | None = None

    def raw(self, run_id: str) -> dict[str, Any]:
        return {
            "idempotency_key": f"demo-{run_id}-{self.key}",
            "provider": self.provider,
            "customer_id": f"demo-{run_id}-{self.customer}",
            "amount": self.amount,
            "currency_code": self.currency,
            "credit_type": self.credit_type,
            "note": f"creditq demo: {self.key}",
        }


def samples() -> list[Sample]:
    """The mix: both providers, several currencies, a zero, a retried webhook, a 404."""
    c, inv, cb = Expect.CONFIRMED, "inveterate", "chargebee"
    return [
        Sample("order-1001-cashback", inv, "cust-ada", "4.50", "USD", c),
        Sample("order-1002-refund", inv, "cust-bo", "25.00", "USD", c),
        Sample("tier-gold-bonus", inv, "cust-cy", "12.75", "CAD", c),
        Sample("review-reward-31", inv, "cust-di", "3.00", "USD", c),
        Sample("order-1003-refund", cb, "cust-ed", "18.20", "USD", c, "general"),
        Sample("referral-77", cb, "cust-fay", "10.00", "EUR", c, "referral_rewards"),
        Sample("loyalty-9", cb, "cust-gus", "1500", "JPY", c, "loyalty_credits"),
        Sample("order-1004-cashback", cb, "cust-hal", "1.250", "KWD", c, "general"),
        Sample("goodwill-12", inv, GONE_CUSTOMER, "5.00", "USD", Expect.REJECTED),
        Sample("order-1005-zero", cb, "cust-ida", "0.00", "USD", Expect.REFUSED, "general"),
        Sample("order-1001-cashback", inv, "cust-ada", "4.5", "USD", Expect.DUPLICATE),
    ]


@dataclass
class Row:
    sample: Sample
    key: str
    outcome: str = ""
    job: Job | None = None
