"""Everything one running sandbox knows, in one object the handlers share.

Each part guards itself, so no lock spans two of them; ``reset`` empties the
data but keeps the options, as a test wants between two scenarios.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from worker.domain.grant import Provider
from worker.sandbox.faults import FaultPlan
from worker.sandbox.idempotency import IdempotencyStore
from worker.sandbox.ledger import Ledger
from worker.sandbox.options import SandboxOptions
from worker.sandbox.ratelimit import SlidingWindow
from worker.sandbox.stats import Stats

PROVIDERS = tuple(provider.value for provider in Provider)
MARK_STATUSES = (400, 404)


class CustomerMarks:
    """Customers whose submits are refused with a chosen status (400 or 404)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: dict[tuple[str | None, str], int] = {}

    def mark(self, customer_id: str, status: int | None, provider: str | None = None) -> None:
        """``status=None`` clears the mark; ``provider=None`` marks the id at both providers."""
        if status is not None and status not in MARK_STATUSES:
            raise ValueError(f"status must be one of {MARK_STATUSES} or None")
        if provider is not None and provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}")
        with self._lock:
            if status is None:
                self._marks.pop((provider, customer_id), None)
            else:
                self._marks[(provider, customer_id)] = status

    def status(self, provider: str, customer_id: str) -> int | None:
        with self._lock:
            return self._marks.get((provider, customer_id)) or self._marks.get((None, customer_id))

    def to_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"provider": provider, "customer_id": customer, "status": status}
                for (provider, customer), status in self._marks.items()
            ]

    def reset(self) -> None:
        with self._lock:
            self._marks.clear()


class SandboxState:
    def __init__(self, options: SandboxOptions | None = None, seed: int = 0) -> None:
        self._options = options or SandboxOptions()
        self._options_lock = threading.Lock()
        self.ledger = Ledger()
        self.faults = FaultPlan(seed)
        self.limiters = {provider: SlidingWindow() for provider in PROVIDERS}
        self.idempotency = IdempotencyStore()
        self.stats = Stats(PROVIDERS)
        self.marks = CustomerMarks()
        # Set on stop: wakes every latency or hold sleep so shutdown is prompt.
        self.stopping = threading.Event()

    @property
    def options(self) -> SandboxOptions:
        return self._options

    def configure(self, **changes: Any) -> SandboxOptions:
        """Replace some options (unknown names raise TypeError, bad values ValueError)."""
        with self._options_lock:
            self._options = dataclasses.replace(self._options, **changes)
            return self._options

    def pause(self, seconds: float) -> None:
        """Sleep, unless the sandbox is stopping."""
        if seconds > 0:
            self.stopping.wait(seconds)

    def reset(self) -> None:
        self.ledger.reset()
        self.faults.clear()
        for limiter in self.limiters.values():
            limiter.reset()
        self.idempotency.reset()
        self.stats.reset()
        self.marks.reset()
