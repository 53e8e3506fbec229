"""The exceptions creditq raises: each is part of the interface and prints as one line."""

from __future__ import annotations


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
