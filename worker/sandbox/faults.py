"""The fault plan: which provider call fails, and how. Pure decisions, no I/O.

A fault is chosen per call, before the handler runs, from two sources:

* a queue of faults for "the next N matching calls" (deterministic, for tests that
  script one exact failure), consumed first-in first-out;
* standing probabilities ("30% of submits are applied and then answered 500"),
  drawn from a seeded RNG so a run can be repeated exactly.

A fault can aim at one customer (``customer_id``), so one grant among many misbehaves
while the rest of the traffic flows: a test of "a single slow or ambiguous grant among
thousands" needs exactly that.

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
    TRICKLE = "trickle"  # applied, then the real reply dribbles out over ``hold`` seconds
    LAGGED = "lagged"  # applied, listed only after ``lag`` seconds; answered per ``then``

    @property
    def applies(self) -> bool:
        """Whether the call still takes effect: the cases a client must reconcile."""
        return self in _APPLYING


_APPLYING = frozenset(
    {FaultKind.ERROR_AFTER, FaultKind.TIMEOUT_AFTER, FaultKind.TRICKLE, FaultKind.LAGGED}
)
# What a ``lagged`` fault may do to the answer once the credit is written (None: answer as usual).
THEN_KINDS = (FaultKind.ERROR_AFTER, FaultKind.TIMEOUT_AFTER, FaultKind.TRICKLE)
OPERATIONS = ("submit", "list", "health")


@dataclass(frozen=True)
class Fault:
    """One kind of failure and whom it targets (``None``: any provider / operation / customer).

    retry_after: seconds put in ``Retry-After`` for ``rate_limited``.
    hold:        seconds a ``timeout_after`` keeps the client waiting, or a ``trickle`` spreads
                 its body over (None: the sandbox's ``hold`` option).
    late:        ``timeout_after`` answers the real reply after the hold instead of
                 closing the connection unanswered.
    customer_id: only calls for this customer match (Inveterate: the member id in the path;
                 Chargebee: ``customer_id`` of an add, ``customer_id[is]`` of a listing). A call
                 that names no customer (an unfiltered listing, the health check) never matches.
    lag:         ``lagged`` only: seconds before this one credit shows in listings, whatever
                 the sandbox's ``lag`` option says.
    then:        ``lagged`` only: what the answer does after the write, one of ``THEN_KINDS``
                 (None: the usual 2xx). ``lagged`` + ``lag=6`` + ``then="error_after"`` is
                 "applied, listed 6 s later, answered 500".

    A ``lagged`` fault targets submits (the only call that writes): its operation defaults
    to ``submit`` so a listing in between cannot use it up.
    """

    kind: FaultKind
    provider: str | None = None
    operation: str | None = None
    retry_after: float = 1.0
    hold: float | None = None
    late: bool = False
    customer_id: str | None = None
    lag: float | None = None
    then: FaultKind | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))
        if self.operation is not None and self.operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}")
        if self.retry_after < 0 or (self.hold is not None and self.hold < 0):
            raise ValueError("retry_after and hold must not be negative")
        if self.customer_id is not None and (
            not isinstance(self.customer_id, str) or not self.customer_id
        ):
            raise ValueError("customer_id must be a non-empty string (or None for any)")
        if self.kind is FaultKind.LAGGED:
            self._check_lagged()
        elif self.lag is not None or self.then is not None:
            raise ValueError("lag and then are only for kind lagged")

    def _check_lagged(self) -> None:
        if self.operation is None:
            object.__setattr__(self, "operation", "submit")
        if self.operation != "submit":
            raise ValueError("a lagged fault targets submits only")
        if self.lag is None or self.lag < 0:
            raise ValueError("a lagged fault needs lag, in seconds, not negative")
        if self.then is not None:
            then = FaultKind(self.then)
            if then not in THEN_KINDS:
                raise ValueError(f"then must be one of {', '.join(THEN_KINDS)} (or None)")
            object.__setattr__(self, "then", then)

    @property
    def answer(self) -> FaultKind | None:
        """What happens to the answer of a call this fault let through: the kind itself, or
        for ``lagged`` its ``then`` (None: the usual answer)."""
        return self.then if self.kind is FaultKind.LAGGED else self.kind

    def matches(self, provider: str, operation: str, customer_id: str | None = None) -> bool:
        return (
            (self.provider is None or self.provider == provider)
            and (self.operation is None or self.operation == operation)
            and (self.customer_id is None or self.customer_id == customer_id)
        )

    def to_json(self) -> dict[str, Any]:
        then = None if self.then is None else self.then.value
        return {**asdict(self), "kind": self.kind.value, "then": then}


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

    def draw(self, provider: str, operation: str, customer_id: str | None = None) -> Fault | None:
        """The fault for this call, if any; a queued fault wins over a probability.

        ``customer_id`` is the customer the call names (None when it names none); faults
        aimed at another customer let the call pass and stay queued.
        """
        with self._lock:
            for queued in self._queue:
                if queued.fault.matches(provider, operation, customer_id):
                    queued.remaining -= 1
                    if queued.remaining == 0:
                        self._queue.remove(queued)
                    return queued.fault
            for chance in self._chances:
                # Draw only for matching rules, so unrelated traffic does not shift the sequence.
                if (
                    chance.fault.matches(provider, operation, customer_id)
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
