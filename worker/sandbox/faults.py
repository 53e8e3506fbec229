"""The fault plan: which provider call fails, and how. Pure decisions, no I/O.

A fault is chosen per call, before the handler runs, from two sources:

* a queue of faults for "the next N matching calls" (deterministic, for tests that
  script one exact failure), consumed first-in first-out;
* standing probabilities ("30% of submits are applied and then answered 500"),
  drawn from a seeded RNG so a run can be repeated exactly.

The plan only decides; the pipeline (``pipeline.py``) carries the fault out.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    ERROR_BEFORE = "error_before"  # 500, nothing applied
    ERROR_AFTER = "error_after"  # applied, then 500: the ambiguous outcome
    TIMEOUT_AFTER = "timeout_after"  # applied, then no answer within the client's timeout
    RATE_LIMITED = "rate_limited"  # 429 with Retry-After, nothing applied
    UNAVAILABLE = "unavailable"  # 503, nothing applied

    @property
    def applies(self) -> bool:
        """Whether the call still takes effect: the cases a client must reconcile."""
        return self in (FaultKind.ERROR_AFTER, FaultKind.TIMEOUT_AFTER)


OPERATIONS = ("submit", "list", "health")


@dataclass(frozen=True)
class Fault:
    """One kind of failure and whom it targets (``None``: any provider / any operation).

    retry_after: seconds put in ``Retry-After`` for ``rate_limited``.
    hold:        seconds a ``timeout_after`` keeps the client waiting (None: the sandbox's
                 ``hold`` option).
    late:        ``timeout_after`` answers the real reply after the hold instead of
                 closing the connection unanswered.
    """

    kind: FaultKind
    provider: str | None = None
    operation: str | None = None
    retry_after: float = 1.0
    hold: float | None = None
    late: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))
        if self.operation is not None and self.operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}")
        if self.retry_after < 0 or (self.hold is not None and self.hold < 0):
            raise ValueError("retry_after and hold must not be negative")

    def matches(self, provider: str, operation: str) -> bool:
        return (self.provider is None or self.provider == provider) and (
            self.operation is None or self.operation == operation
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}


@dataclass
class _Queued:
    fault: Fault
    remaining: int


@dataclass(frozen=True)
class _Chance:
    fault: Fault
    probability: float


class FaultPlan:
    """Thread-safe; with one seed and one order of calls, the same faults every run."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(seed)
        self._queue: list[_Queued] = []
        self._chances: list[_Chance] = []

    def queue(self, fault: Fault, times: int = 1) -> None:
        """Fail the next ``times`` calls that ``fault`` matches."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._queue.append(_Queued(fault, times))

    def chance(self, fault: Fault, probability: float) -> None:
        """Fail each matching call with ``probability`` (0 < p <= 1)."""
        if not 0 < probability <= 1:
            raise ValueError("probability must be in (0, 1]")
        with self._lock:
            self._chances.append(_Chance(fault, probability))

    def draw(self, provider: str, operation: str) -> Fault | None:
        """The fault for this call, if any; a queued fault wins over a probability."""
        with self._lock:
            for queued in self._queue:
                if queued.fault.matches(provider, operation):
                    queued.remaining -= 1
                    if queued.remaining == 0:
                        self._queue.remove(queued)
                    return queued.fault
            for chance in self._chances:
                # Draw only for matching rules, so unrelated traffic does not shift the sequence.
                if (
                    chance.fault.matches(provider, operation)
                    and self._rng.random() < chance.probability
                ):
                    return chance.fault
            return None

    def clear(self) -> None:
        """Forget every fault and restart the RNG from the seed."""
        with self._lock:
            self._queue.clear()
            self._chances.clear()
            self._rng = random.Random(self._seed)

    def pending(self) -> int:
        """Queued faults not yet used: lets a test assert its script ran to the end."""
        with self._lock:
            return sum(queued.remaining for queued in self._queue)

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "seed": self._seed,
                "queued": [
                    {**queued.fault.to_json(), "times": queued.remaining} for queued in self._queue
                ],
                "probabilities": [
                    {**chance.fault.to_json(), "probability": chance.probability}
                    for chance in self._chances
                ],
            }
